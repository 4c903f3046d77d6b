from django.contrib import admin

from .models import Conversation, PlaygroundImage


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "updated_at")
    search_fields = ("title", "user__username")


@admin.register(PlaygroundImage)
class PlaygroundImageAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "user", "created_at")
    exclude = ("data_url",)
