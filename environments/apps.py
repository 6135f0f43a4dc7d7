from django.apps import AppConfig


class EnvironmentsConfig(AppConfig):
    name = "environments"
    verbose_name = "Ephemera"

    def ready(self) -> None:
        from environments.access import credentials, signals  # noqa: F401  (connects receivers)

        credentials.connect()
