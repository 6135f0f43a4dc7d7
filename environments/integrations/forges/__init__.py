"""Pull-request previews from three forges behind one small interface (``base.Forge``):
GitHub, GitLab and Gitea/Forgejo. ``previews`` turns their webhooks into environments,
``feedback`` posts commit statuses and one comment back, ``hooks`` validates a
repository hook's settings."""

from __future__ import annotations

from environments.integrations.forges.base import Forge
from environments.integrations.forges.gitea import Gitea
from environments.integrations.forges.github import GitHub
from environments.integrations.forges.gitlab import GitLab

FORGES: dict[str, Forge] = {forge.name: forge for forge in (GitHub(), GitLab(), Gitea())}


def forge_for(name: str) -> Forge:
    return FORGES[name]
