"""Join a multicast session: settings -> target disk -> summary + typed confirmation ->
progress -> result (the image comes from the sender's stream, the gaps from the fallback)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from app.engine import DiskRow
from app.flows import run_job, run_steps
from app.jobs import Job, Outcome
from app.screens.network import JoinCastScreen
from app.screens.pickers import DiskPickScreen
from app.screens.summary import SummaryScreen
from bootmedia.progress import Reporter, human_bytes

if TYPE_CHECKING:
    from app.app import BootmediaApp


async def receive_flow(app: BootmediaApp) -> None:
    answers = await run_steps(
        app,
        [
            (
                "settings",
                lambda a: JoinCastScreen(
                    "Join 1/3: session", a.get("settings", {}).get("fallback", "")
                ),
            ),
            (
                "target",
                lambda a: DiskPickScreen(
                    "Join 2/3: target disk",
                    question="Which disk receives the image? Everything on it is overwritten.",
                ),
            ),
            (
                "job",
                lambda a: SummaryScreen("Join 3/3: check and confirm", lambda: plan_receive_job(a)),
            ),
        ],
    )
    if answers is not None:
        await run_job(app, answers["job"])


def plan_receive_job(a: dict[str, Any]) -> Job:
    from bootmedia.cast.receiver import plan_receive, receive
    from bootmedia.net.mount import connect
    from bootmedia.net.url import is_url

    s: dict[str, str] = a["settings"]
    target: DiskRow = a["target"]
    label = s.get("fallback") or None
    fallback = connect(label) if label and is_url(label) else label
    plan = plan_receive(
        target.disk.path,
        target.label(),
        fallback=fallback,
        fallback_label=label,
        image=s.get("image") or None,
        interface=s.get("interface") or None,
        rdv=s.get("rdv") or "239.255.77.77",
    )

    def execute(reporter: Reporter) -> Outcome:
        result = receive(
            plan.target,
            fallback=plan.fallback,
            fallback_label=plan.fallback_label,
            image=plan.image,
            interface=plan.interface,
            rdv=plan.rdv,
            portbase=plan.portbase,
            reporter=reporter,
        )
        lines = (
            f"Image {result.image} written to {target.label()}: {human_bytes(result.written)}",
            result.detail,
            f"Chunks from the stream: {result.from_stream}; from the fallback: "
            + (str(result.from_fallback) if result.from_fallback >= 0 else "all"),
            *(f"Note: {n}" for n in result.notes),
        )
        title = "Received: every byte written was read back and checked"
        return Outcome(result.ok, title if result.ok else "Receive FAILED", lines)

    return Job(
        kind="receive",
        title=f"Join the multicast session onto {target.disk.name}",
        summary=tuple(plan.summary()),
        command=shlex.join(plan.command()),
        execute=execute,
        cancel_note=f"{target.disk.name} is marked incomplete: it will not boot until restored again.",
        confirm=target,
    )
