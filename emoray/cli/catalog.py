"""`emoray tasks`, `emoray stages` and `emoray models`: the catalogs."""

from __future__ import annotations

from emoray.cli.common import command
from emoray.errors import EXIT_OK

EXAMPLES = {
    "tasks": ["emoray tasks"],
    "stages": ["emoray stages"],
    "models": ["emoray models"],
}


def add(sub) -> None:
    """Declare the commands of this module and their flags."""
    command(sub, "tasks", EXAMPLES, help="list the task catalog").set_defaults(fn=cmd_tasks)
    command(sub, "stages", EXAMPLES, help="the pipeline's stages, the columns each needs and "
            "adds, and every column (Markdown)").set_defaults(fn=cmd_stages)
    command(sub, "models", EXAMPLES, help="list the known EmoLLMs").set_defaults(fn=cmd_models)


def cmd_tasks(args) -> int:
    """Every task with its family, prompt version and description."""
    from emoray.tasks import TASKS

    for t in TASKS.values():
        targets = f" targets: {','.join(t.targets)}" if t.targets else ""
        print(f"{t.name:12} {t.family:10} {t.prompt_version()}  {t.description}{targets}")
    return EXIT_OK


def cmd_stages(args) -> int:
    """The stage table and the column registry, as docs/annotate.md holds them."""
    from emoray.contract import render
    from emoray.pipeline import STAGES

    print(render(STAGES))
    return EXIT_OK


def cmd_models(args) -> int:
    """The EmoLLMs catalog and the engine serving each."""
    from emoray.models import EMOLLMS

    for m in EMOLLMS.values():
        print(f"{m.name:20} {m.source:30} {m.architecture:27} {m.engine} engine")
    return EXIT_OK
