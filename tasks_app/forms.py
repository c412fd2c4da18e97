"""Forms of the web UI: list filters, the execute form built from a task's parameters, a JSON
spec, and notification preferences. They turn input into specs and arguments for the services."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from .api.content import text_problem
from .models import NOTIFIABLE_EVENTS, Kind, NotificationPreference, Priority, Status, new_webhook_secret
from .registry import TaskDef, all_tasks

TRASH = "marked_for_deletion"
SORTS = {
    "created": "created_at",
    "name": "name",
    "status": "status",
    "kind": "kind",
    "task": "task_name",
    "priority": "priority",
    "progress": "progress",
    "started": "started_at",
    "finished": "finished_at",
}
DELETE_TTLS = [(3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days"), (30 * 86400, "30 days")]


def _blank(choices) -> list[tuple[str, str]]:
    return [("", "Any"), *choices]


class TaskFilterForm(forms.Form):
    """The task list's filters; every value lives in the URL (a GET form)."""

    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"type": "search"}))
    status = forms.ChoiceField(required=False, choices=_blank([*Status.choices, (TRASH, "Trash")]))
    kind = forms.ChoiceField(required=False, choices=_blank(Kind.choices))
    task = forms.ChoiceField(required=False, label="Task name")
    category = forms.CharField(required=False)
    tag = forms.CharField(required=False)
    created_after = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    created_before = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(required=False, choices=[(k, k) for k in SORTS] + [(f"-{k}", k) for k in SORTS],
                             widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task"].choices = _blank([(t.name, t.name) for t in all_tasks()])


class PriorityForm(forms.Form):
    priority = forms.ChoiceField(choices=Priority.choices)


class DeleteForm(forms.Form):
    ttl = forms.TypedChoiceField(choices=DELETE_TTLS, coerce=int, initial=86400, label="Restorable for")


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class LogFilterForm(forms.Form):
    level = forms.ChoiceField(
        required=False, choices=[("", "All levels"), ("DEBUG", "Debug"), ("INFO", "Info"), ("WARNING", "Warning"),
                                 ("ERROR", "Error"), ("CRITICAL", "Critical")],
    )
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"type": "search"}))
    scope = forms.ChoiceField(required=False, choices=[("", "This task and below"), ("workflow", "Whole workflow")])


# Executing a task -------------------------------------------------------------------------------


def _tags(raw: str) -> list[str]:
    return [t.strip() for t in raw.split(",") if t.strip()]


class OptionsForm(forms.Form):
    """What every submission can set besides the spec itself."""

    name = forms.CharField(required=False, max_length=200, label="Title")
    priority = forms.ChoiceField(required=False, choices=[("", "Task default"), *Priority.choices])
    category = forms.CharField(required=False, max_length=100)
    tags = forms.CharField(required=False, help_text="Comma-separated.")

    def apply(self, spec: dict) -> dict:
        """The spec with the options that were filled in (an empty one keeps the spec's own)."""
        data = self.cleaned_data
        if data["tags"]:
            spec["tags"] = _tags(data["tags"])
        for key in ("name", "priority", "category"):
            if data[key]:
                spec[key] = data[key]
        return spec


class TaskChoiceForm(OptionsForm):
    task = forms.ChoiceField(label="Task")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task"].choices = [("", "Choose a task…")] + [(t.name, t.name) for t in all_tasks()]
        self.order_fields(["task"])


PARAM_PREFIX = "kw_"


def param_field(param: dict) -> forms.Field:
    """A form field for one parameter of a task, from its type name and default."""
    type_name = str(param["type"])
    default = param["default"]
    help_text = f"{type_name}" + ("" if param["required"] else f", default {json.dumps(default)}")
    common = {"required": param["required"], "label": param["name"], "help_text": help_text}
    if "bool" in type_name:
        return forms.TypedChoiceField(
            choices=[("", "default"), ("true", "true"), ("false", "false")], coerce=lambda v: v == "true",
            empty_value=None, initial="true" if default is True else ("false" if default is False else ""), **common,
        )
    if type_name.startswith("int"):
        return forms.IntegerField(initial=default, **common)
    if type_name.startswith("float"):
        return forms.FloatField(initial=default, **common)
    if type_name.startswith("str"):
        return forms.CharField(initial=default, strip=False, **common)
    return JSONValueField(initial=None if default is None else json.dumps(default), **common)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class StrictJSONDecoder(json.JSONDecoder):
    """JSON as the API reads it: ``NaN``, ``Infinity`` and ``-Infinity`` are refused (ValueError)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, parse_constant=_no_constant, **kwargs)


def refuse_bad_text(value: Any) -> Any:
    """The value, unless it holds text the API refuses: a NUL character or a lone surrogate."""
    problem = text_problem(value)
    if problem:
        raise forms.ValidationError(problem, code="invalid")
    return value


def parse_json(raw: str) -> Any:
    """The JSON in ``raw``, or a form error saying what the API would refuse in it."""
    try:
        value = json.loads(raw, cls=StrictJSONDecoder)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(f"not valid JSON: {exc}", code="invalid") from exc
    except RecursionError:
        raise forms.ValidationError("not valid JSON: it is nested too deeply to read", code="invalid") from None
    except ValueError as exc:  # NaN or Infinity
        raise forms.ValidationError(str(exc), code="invalid") from None
    return refuse_bad_text(value)


class DepthSafeJSONField(forms.JSONField):
    """Django's JSON form field, except that input nested deeper than Python's parser can follow
    (its recursion limit) is an error on the field, not a server error, and that what the API
    refuses (NaN, Infinity, NUL characters, lone surrogates) is an error too."""

    default_error_messages = {"too_deep": "Enter valid JSON: it is nested too deeply to read."}

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("decoder", StrictJSONDecoder)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        try:
            return refuse_bad_text(super().to_python(value))
        except RecursionError:
            raise forms.ValidationError(self.error_messages["too_deep"], code="too_deep") from None
        except ValueError as exc:  # NaN or Infinity
            raise forms.ValidationError(str(exc), code="invalid") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except (RecursionError, ValueError):  # shown back as typed, like any invalid JSON
            return forms.fields.InvalidJSONInput(data)


class JSONValueField(forms.CharField):
    """Any JSON value (a bare word is taken as a string)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.TextInput(attrs={"class": "mono", "placeholder": "JSON"}))
        super().__init__(**kwargs)

    def to_python(self, value: str | None) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            decoded = json.loads(value, cls=StrictJSONDecoder)
        except (json.JSONDecodeError, RecursionError):
            return value
        except ValueError as exc:  # NaN or Infinity
            raise forms.ValidationError(str(exc), code="invalid") from None
        return refuse_bad_text(decoded)


class ParamsForm(forms.Form):
    """The arguments of one registered task, a field per parameter, plus extra keyword arguments as JSON."""

    extra = forms.CharField(
        required=False, label="More keyword arguments (JSON object)",
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono json-editor", "placeholder": '{"key": "value"}'}),
    )

    def __init__(self, taskdef: TaskDef, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.taskdef = taskdef
        for param in taskdef.params:
            if param["kind"] != "var_keyword":
                self.fields[PARAM_PREFIX + param["name"]] = param_field(param)
        self.order_fields([k for k in self.fields if k != "extra"] + ["extra"])

    def clean_extra(self) -> dict:
        raw = self.cleaned_data["extra"].strip()
        if not raw:
            return {}
        value = parse_json(raw)
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value

    def kwargs(self) -> dict:
        given = {
            key.removeprefix(PARAM_PREFIX): value
            for key, value in self.cleaned_data.items()
            if key.startswith(PARAM_PREFIX) and value not in (None, "")
        }
        return {**given, **self.cleaned_data["extra"]}

    def spec(self) -> dict:
        return {"task": self.taskdef.name, "kwargs": self.kwargs()}

    @classmethod
    def initial_for(cls, taskdef: TaskDef, kwargs: dict) -> dict:
        """Initial values that show ``kwargs`` in the fields (Edit and retry prefills the old arguments)."""
        named = {p["name"]: p for p in taskdef.params if p["kind"] != "var_keyword"}
        initial, extra = {}, {}
        for key, value in kwargs.items():
            if key not in named:
                extra[key] = value
            elif isinstance(param_field(named[key]), (JSONValueField, forms.TypedChoiceField)):
                initial[PARAM_PREFIX + key] = json.dumps(value)
            else:
                initial[PARAM_PREFIX + key] = value
        if extra:
            initial["extra"] = json.dumps(extra)
        return initial


class SpecForm(OptionsForm):
    """A whole spec as JSON: a task, a chain, a swarm or a graph."""

    spec = forms.CharField(
        label="Spec (JSON)",
        widget=forms.Textarea(attrs={"rows": 14, "class": "mono json-editor", "spellcheck": "false"}),
    )

    def clean_spec(self) -> dict:
        value = parse_json(self.cleaned_data["spec"])
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value


SPEC_EXAMPLE = {
    "kind": "chain",
    "name": "Double twice",
    "steps": [{"task": "examples.add", "kwargs": {"a": 1, "b": 2}}, {"task": "examples.double"},
              {"task": "examples.double"}],
}


# Notifications ----------------------------------------------------------------------------------


class PreferencesForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        choices=[(e, e.replace("_", " ").capitalize()) for e in NOTIFIABLE_EVENTS],
        help_text="None ticked means the defaults.",
    )
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https",
                                 label="Webhook URL (JSON POST, Slack-compatible)")
    rotate_webhook_secret = forms.BooleanField(
        required=False, label="Replace the webhook signing secret",
        help_text="Requests signed with the old secret stop verifying at once.",
    )

    class Meta:
        model = NotificationPreference
        fields = ["events", "in_app", "browser", "email", "email_long_task_seconds", "webhook_url"]
        labels = {
            "in_app": "In the app (the bell)",
            "browser": "Browser desktop notifications",
            "email": "Email",
            "email_long_task_seconds": "Email about tasks longer than (seconds)",
        }

    def save(self, commit: bool = True) -> NotificationPreference:
        if self.cleaned_data.get("rotate_webhook_secret"):
            self.instance.webhook_secret = new_webhook_secret()
        return super().save(commit=commit)
