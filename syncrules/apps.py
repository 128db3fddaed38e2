from django.apps import AppConfig


class SyncrulesConfig(AppConfig):
    name = "syncrules"
    verbose_name = "Sync rules"
