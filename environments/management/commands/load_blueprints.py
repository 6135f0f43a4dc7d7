"""manage.py load_blueprints PATH... : validate and publish blueprint files."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from environments.catalog.publishing import publish_blueprint
from environments.catalog.spec import BlueprintInvalid, load_blueprint


class Command(BaseCommand):
    help = (
        "Validate blueprint YAML files (or folders of them) and publish a new version of "
        "each one whose content changed. If any file is invalid, nothing is written."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="blueprint files or folders of *.yaml")

    def handle(self, *args, paths, **options):
        files = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{raw}: no such file or folder")
        if not files:
            raise CommandError("no blueprint files found")

        # Validate everything first: one bad file means nothing is published.
        errors: list[str] = []
        sources: list[tuple[Path, str, str]] = []
        names: dict[str, Path] = {}
        for path in files:
            try:
                source = path.read_text(encoding="utf-8")
                spec = load_blueprint(source)
            except UnicodeDecodeError:
                errors.append(f"{path.name}: the file is not UTF-8 text")
                continue
            except BlueprintInvalid as exc:
                errors.extend(exc.lines(path.name))
                continue
            if spec.name in names:
                errors.append(
                    f"{path.name}: name: {spec.name!r} is also the name in {names[spec.name].name}"
                )
                continue
            names[spec.name] = path
            sources.append((path, source, spec.name))
        if errors:
            for line in errors:
                self.stderr.write(line)
            raise CommandError(f"{len(errors)} problem(s) found; nothing was published")

        with transaction.atomic():
            for path, source, name in sources:
                version, created = publish_blueprint(source=source, skip_known=True)
                latest = version.blueprint.versions.order_by("-number").first()
                if created:
                    self.stdout.write(f"{path.name}: published {name} v{version.number}")
                elif latest.number != version.number:
                    self.stdout.write(
                        f"{path.name}: {name} is v{version.number}, already published; "
                        f"v{latest.number} (published since) stays current"
                    )
                else:
                    self.stdout.write(f"{path.name}: {name} v{version.number} unchanged")
