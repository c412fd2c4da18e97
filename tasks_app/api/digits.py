"""Integers in query parameters are written with ASCII digits.

Python's ``int()`` reads any Unicode decimal digits (``int("١٢") == 12``), and ``str.isdigit()`` is
also true of digits ``int()`` refuses (``"²"``). The API takes neither: ``?ttl=٣``, ``?limit=١٢`` or
``?page=١٢`` is a 400 naming the parameter, the same answer as ``?ttl=three``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from rest_framework import serializers

MESSAGE = "must be a whole number written with the digits 0-9"


def is_ascii_int(value: str) -> bool:
    """An optional sign then ASCII digits only (surrounding blanks allowed, as ``int()`` allows)."""
    text = value.strip().removeprefix("-").removeprefix("+")
    return text.isascii() and text.isdigit()


class AsciiIntegerField(serializers.IntegerField):
    """DRF's integer field, refusing a string of digits other than 0-9."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not is_ascii_int(data):
            raise serializers.ValidationError(MESSAGE, code="invalid")
        return super().to_internal_value(data)


class AsciiIntegerFormField(forms.IntegerField):
    """Django's integer form field (django-filter's filters use it), refusing digits other than 0-9."""

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str) and value.strip() and not is_ascii_int(value):
            raise forms.ValidationError(MESSAGE, code="invalid")
        return super().to_python(value)
