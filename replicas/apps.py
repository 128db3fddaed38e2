from django.apps import AppConfig


class ReplicasConfig(AppConfig):
    name = "replicas"
    verbose_name = "Replicas, twins and sync events"

    def ready(self) -> None:
        # Changes the instances layer records go to the pipeline (a port: instances never imports replicas).
        from instances.outbox import register_outbox
        from replicas import outbox

        register_outbox(outbox)
