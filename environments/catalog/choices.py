"""The catalogue's closed lists, declared once: the YAML format, the models, the forms
and the API all read them from here."""

from django.db import models


class Purpose(models.TextChoices):
    DEMO = "demo", "Sales demo"
    TRAINING = "training", "Training"
    HOTFIX = "hotfix", "Hotfix test"
    PREVIEW = "preview", "Preview"
    BENCHMARK = "benchmark", "Benchmark"
    E2E = "e2e", "End-to-end test"


class ApprovalPolicy(models.TextChoices):
    AUTO = "auto", "Automatic"
    REQUIRED = "required", "Approval required"
    OVER_QUOTA = "over-quota", "Approval when over quota"


class KubeAccess(models.TextChoices):
    VIEW = "view", "View"
    EDIT = "edit", "Edit"
