"""Notifications and chat over HTTP (CONTRACT.md §5); the live stream itself is the WebSocket.

Notifications are personal: everyone, staff included, sees and marks only their own. ``urlpatterns``
is included under ``/api/`` by ``api/urls.py``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.db.models import QuerySet
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import NOTIFIABLE_EVENTS, Notification, NotificationPreference, new_webhook_secret
from ..services import chat, notifications
from . import schema
from .content import FormatNegotiation, JSONBodyParser
from .errors import InvalidInput, TooLarge
from .pagination import Pagination


class LiveApiView:
    parser_classes = [JSONBodyParser]
    content_negotiation_class = FormatNegotiation


# Serializers ----------------------------------------------------------------------------------


class NotificationSerializer(serializers.ModelSerializer):
    task_id = serializers.IntegerField(source="signature_id", allow_null=True, read_only=True)
    read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "event", "title", "body", "task_id", "created_at", "read_at", "read", "deliveries"]
        read_only_fields = fields

    def get_read(self, notification: Notification) -> bool:
        return notification.read_at is not None


class PreferenceSerializer(serializers.ModelSerializer):
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=NOTIFIABLE_EVENTS), allow_empty=True, required=False, max_length=20,
        help_text="Events that notify you; empty means the defaults (effective_events).",
    )
    effective_events = serializers.SerializerMethodField()
    available_events = serializers.SerializerMethodField()
    webhook_url = serializers.URLField(max_length=500, allow_blank=True, required=False,
                                       help_text="JSON POST (Slack-compatible `text`) for each notification.")
    email_long_task_seconds = serializers.IntegerField(min_value=0, max_value=30 * 86400, required=False)
    webhook_secret = serializers.SerializerMethodField(
        help_text="Key of the HMAC-SHA256 in each webhook request's X-Orchestrator-Signature header "
                  "(docs/security.md); null until the preferences are first saved.")
    rotate_webhook_secret = serializers.BooleanField(
        write_only=True, required=False, help_text="true: replace the signing secret (the old one stops verifying).")

    class Meta:
        model = NotificationPreference
        fields = ["events", "effective_events", "available_events", "in_app", "browser", "email",
                  "email_long_task_seconds", "webhook_url", "webhook_secret", "rotate_webhook_secret"]

    def get_effective_events(self, pref: NotificationPreference) -> list[str]:
        chosen = notifications.wanted_events(pref)
        return [event for event in NOTIFIABLE_EVENTS if event in chosen]

    def get_available_events(self, pref: NotificationPreference) -> list[str]:
        return list(NOTIFIABLE_EVENTS)

    def validate_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def validate_webhook_url(self, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise serializers.ValidationError("must be an http or https URL")
        return value

    def get_webhook_secret(self, pref: NotificationPreference) -> str | None:
        return pref.webhook_secret if pref.pk is not None else None

    def update(self, pref: NotificationPreference, validated_data: dict) -> NotificationPreference:
        if validated_data.pop("rotate_webhook_secret", False):
            pref.webhook_secret = new_webhook_secret()
        return super().update(pref, validated_data)


class MarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="How many notifications were unread and are read now.")


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF's CharField turns ``7`` into ``"7"``)."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChatRequestSerializer(serializers.Serializer):
    message = StrictCharField(max_length=chat.MAX_MESSAGE, help_text="e.g. “How's my CRM task going?”")


class ChatReplySerializer(serializers.Serializer):
    reply = serializers.CharField()
    action = serializers.CharField(allow_null=True, help_text="What was done or asked: progress, logs, pause, "
                                   "resume, retry, rerun, approve, reject, confirm_cancel, cancel, restart, list, "
                                   "help, not_found, error; null when nothing could be done.")
    task_id = serializers.IntegerField(allow_null=True)


# Views ----------------------------------------------------------------------------------------


class NotificationListView(LiveApiView, generics.ListAPIView):
    """The user's in-app notifications, newest first."""

    serializer_class = NotificationSerializer
    pagination_class = Pagination
    filter_backends: list = []

    @extend_schema(
        summary="Your notifications, newest first",
        parameters=[OpenApiParameter("unread", bool, description="1: only unread ones")],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Notification]:
        if getattr(self, "swagger_fake_view", False):
            return Notification.objects.none()
        queryset = Notification.objects.filter(owner=self.request.user, deliveries__has_key="in_app")
        if self.request.query_params.get("unread", "").lower() in ("1", "true", "yes"):
            queryset = queryset.filter(read_at__isnull=True)
        return queryset


class NotificationReadView(LiveApiView, APIView):
    @extend_schema(summary="Mark one notification read", request=None,
                   responses={200: NotificationSerializer, 404: schema.NOT_FOUND})
    def post(self, request: Request, pk: int) -> Response:
        notification = Notification.objects.filter(owner=request.user, pk=pk).first()
        if notification is None:
            raise NotFound("No such notification.")
        if notification.read_at is None:
            notification.read_at = timezone.now()
            notification.save(update_fields=["read_at"])
        return Response(NotificationSerializer(notification).data)


class NotificationReadAllView(LiveApiView, APIView):
    @extend_schema(summary="Mark all your notifications read", request=None, responses={200: MarkedSerializer})
    def post(self, request: Request) -> Response:
        marked = Notification.objects.filter(owner=request.user, read_at__isnull=True).update(read_at=timezone.now())
        return Response({"marked": marked})


class PreferenceView(LiveApiView, APIView):
    """Which events notify you, and through which channels (in-app, browser, email, webhook)."""

    @extend_schema(summary="Your notification preferences", responses={200: PreferenceSerializer})
    def get(self, request: Request) -> Response:
        return Response(PreferenceSerializer(notifications.preference_for(request.user.pk)).data)

    @extend_schema(summary="Change your notification preferences (fields left out keep their value)",
                   request=PreferenceSerializer, responses={200: PreferenceSerializer, 400: schema.BAD_INPUT})
    def put(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise InvalidInput({"body": "must be a JSON object"})
        serializer = PreferenceSerializer(notifications.preference_for(request.user.pk), data=request.data,
                                          partial=True)
        serializer.is_valid(raise_exception=True)
        NotificationPreference.objects.get_or_create(user=request.user)  # two first saves at once stay one row
        serializer.instance = NotificationPreference.objects.get(user=request.user)
        serializer.save()
        return Response(serializer.data)

    @extend_schema(summary="Change some of your notification preferences", request=PreferenceSerializer,
                   responses={200: PreferenceSerializer, 400: schema.BAD_INPUT})
    def patch(self, request: Request) -> Response:
        return self.put(request)


class ChatView(LiveApiView, APIView):
    """Ask about your tasks or steer them in plain words; a deterministic parser, no language model."""

    @extend_schema(summary="Chat about your tasks", request=ChatRequestSerializer,
                   responses={200: ChatReplySerializer, 400: schema.BAD_INPUT, 413: schema.TOO_LARGE})
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise InvalidInput({"body": "must be a JSON object"})
        message = request.data.get("message")
        if isinstance(message, str) and len(message) > chat.MAX_MESSAGE:
            raise TooLarge(f"a chat message is limited to {chat.MAX_MESSAGE} characters")
        serializer = ChatRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        answer = chat.reply(request.user, serializer.validated_data["message"])
        return Response(ChatReplySerializer(answer.as_dict()).data)


urlpatterns = [
    path("notifications/", NotificationListView.as_view(), name="notifications"),
    path("notifications/read-all", NotificationReadAllView.as_view(), name="notifications-read-all"),
    path("notifications/preferences", PreferenceView.as_view(), name="notification-preferences"),
    path("notifications/<int:pk>/read", NotificationReadView.as_view(), name="notification-read"),
    path("chat/", ChatView.as_view(), name="chat"),
]
