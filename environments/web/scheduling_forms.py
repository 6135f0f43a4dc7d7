"""The forms of the class and booking pages (the service checks what matters)."""

from __future__ import annotations

from django import forms

from environments.access import people
from environments.models import BlueprintVersion, Team
from environments.web.forms import PARAM_PREFIX, _parameter_field

DATETIME = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
MAX_ROSTER_FILE_BYTES = 200_000


class _SlotForm(forms.Form):
    """Start, end and time zone of a class or booking, and the blueprint's parameters."""

    starts_at = forms.DateTimeField(label="Start", widget=DATETIME)
    ends_at = forms.DateTimeField(label="End", widget=DATETIME)
    time_zone = forms.CharField(label="Time zone", max_length=64)
    grace_minutes = forms.IntegerField(
        label="Grace after the end (minutes)",
        min_value=0,
        max_value=24 * 60,
        initial=0,
        required=False,
        help_text="The environments stay this long after the end, then they are removed.",
    )
    team = forms.ModelChoiceField(queryset=Team.objects.all(), label="Team", empty_label=None)

    def __init__(self, *args, version: BlueprintVersion, teams: list[Team], zone: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = version
        self.fields["time_zone"].initial = zone
        self.fields["time_zone"].widget.attrs["list"] = "time-zones"
        for name in ("starts_at", "ends_at"):
            field = self.fields[name]
            assert isinstance(field, forms.DateTimeField)
            field.input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        team_field = self.fields["team"]
        assert isinstance(team_field, forms.ModelChoiceField)
        team_field.widget.choices = [(t.pk, t.name) for t in teams]
        if len(teams) == 1:
            team_field.initial = teams[0].pk
            team_field.widget = forms.HiddenInput()
            team_field.required = False
        for param in version.blueprint_spec.parameters:
            self.fields[PARAM_PREFIX + param.name] = _parameter_field(param)

    def clean_time_zone(self) -> str:
        zone = self.cleaned_data["time_zone"].strip()
        if not people.valid_time_zone(zone):
            raise forms.ValidationError(
                f"“{zone[:64]}” is not a time zone; choose one like Europe/Paris."
            )
        return zone

    def parameters(self) -> dict:
        values = {}
        for param in self.version.blueprint_spec.parameters:
            value = self.cleaned_data.get(PARAM_PREFIX + param.name)
            if value is not None and value != "":
                values[param.name] = value
        return values

    def parameter_fields(self):
        return [self[name] for name in self.fields if name.startswith(PARAM_PREFIX)]

    def add_parameter_errors(self, errors: dict[str, str]) -> None:
        for name, message in errors.items():
            field = PARAM_PREFIX + name
            self.add_error(field if field in self.fields else None, message)

    @property
    def grace_seconds(self) -> int:
        return (self.cleaned_data.get("grace_minutes") or 0) * 60


class ClassForm(_SlotForm):
    title = forms.CharField(label="Class title", max_length=100)
    seats = forms.IntegerField(
        label="Number of seats",
        min_value=1,
        required=False,
        help_text="How many attendees; leave empty when you give a roster.",
    )
    roster = forms.CharField(
        label="Roster",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": "ada@example.com\nbob@example.com"}),
        help_text="Attendees' email addresses, one per line (or paste a spreadsheet column). "
        "Each gets an invitation with a link to their own seat.",
    )
    roster_file = forms.FileField(
        label="…or upload a CSV file", required=False, help_text="Any column may hold the emails."
    )
    field_order = ["title", "starts_at", "ends_at", "time_zone", "seats", "roster", "roster_file"]

    def roster_text(self) -> str:
        upload = self.cleaned_data.get("roster_file")
        text = self.cleaned_data.get("roster") or ""
        if upload is not None:
            if upload.size > MAX_ROSTER_FILE_BYTES:
                raise forms.ValidationError("The CSV file is too large (at most 200 KB).")
            try:
                text += "\n" + upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The CSV file is not UTF-8 text.") from None
        return text


class BookingForm(_SlotForm):
    customer = forms.CharField(label="Customer", max_length=100)
    field_order = ["customer", "starts_at", "ends_at", "time_zone"]


class ExtendClassForm(forms.Form):
    ends_at = forms.DateTimeField(
        label="New end", widget=DATETIME, input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
    )


class AddSeatForm(forms.Form):
    attendee_email = forms.CharField(
        label="Attendee email (optional)", max_length=254, required=False
    )
