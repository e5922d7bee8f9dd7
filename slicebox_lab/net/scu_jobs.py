"""The node's SCU operations as jobs: ``scu-send`` (C-STORE) and ``scu-retrieve`` (C-MOVE / C-GET).

:func:`register_scu_jobs` registers both runners with ``context.jobs`` (called by
``server.services.register_job_runners``, explicitly, never on import); :func:`submit_send` and
:func:`submit_retrieve` validate a request and queue its job.

``scu-send`` parameters ``{"scu_id", "image_ids"}``; counts ``sent`` and ``failed``; progress one
step per image, in the order given.  A peer that drops the association fails the job with the
counts so far; a resume skips the images the failed run got to (``resume_from["progress_done"]``:
the images are sent in order, so that is every image before the first one not answered).

``scu-retrieve`` parameters ``{"scu_id", "level", "identifier", "method", "destination_scp_id"?}``;
progress and counts (``completed``, ``failed``, ``warning``) from the peer's sub-operation counts.
A resume retrieves again (images already here are replaced by the same ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slicebox_lab.errors import InvalidInput, PeerFailure
from slicebox_lab.jobs import Job, JobContext, image_id_list
from slicebox_lab.net import nodes, scu

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = ["RETRIEVE", "SEND", "register_scu_jobs", "submit_retrieve", "submit_send"]

SEND = "scu-send"
RETRIEVE = "scu-retrieve"
#: the most images one send job takes
MAX_IMAGES = 100_000


def register_scu_jobs(context: SliceboxContext) -> None:
    """Register the runners of ``scu-send`` and ``scu-retrieve`` with ``context.jobs``."""
    context.jobs.register(SEND, lambda job: _run_send(context, job))
    context.jobs.register(RETRIEVE, lambda job: _run_retrieve(context, job))


# ---------------------------------------------------------------------------------------------
# send


def _image_ids(value: Any) -> list[int]:
    return image_id_list(value, "image_ids", MAX_IMAGES)


def submit_send(context: SliceboxContext, scu_id: Any, image_ids: Any, owner: str = "") -> Job:
    """Queue a C-STORE of ``image_ids`` to the remote node; unknown node → NotFound."""
    node = nodes.get_scu(context.index, scu_id)
    ids = _image_ids(image_ids)
    description = f"send {len(ids)} images to {node.name} ({node.ae_title})"
    return context.jobs.submit(SEND, description, {"scu_id": node.id, "image_ids": ids}, owner=owner, total=len(ids))


def _run_send(context: SliceboxContext, job: JobContext) -> dict[str, Any]:
    node = nodes.get_scu(context.index, job.parameters["scu_id"])
    ids = _image_ids(job.parameters["image_ids"])
    skipped = int(job.resume_from.get("progress_done", 0) or 0)
    done = skipped
    job.progress(done, len(ids))
    job.count("sent", 0)
    job.count("failed", 0)

    def on_image(image_id: int, sent: bool) -> None:
        nonlocal done
        done += 1
        job.count("sent" if sent else "failed")
        job.progress(done, len(ids))

    try:
        result = scu.send_images(context, node, ids[skipped:], on_image=on_image, check_cancelled=job.check_cancelled)
    except PeerFailure as error:
        sent = job.snapshot()[2].get("sent", 0)
        raise PeerFailure(f"{error.message} ({sent} of {len(ids) - skipped} images sent)") from None
    return {
        "sent": len(result.sent),
        "failed": {str(image_id): reason for image_id, reason in result.failed.items()},
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------
# retrieve


def submit_retrieve(
    context: SliceboxContext,
    scu_id: Any,
    level: Any,
    identifier: Any,
    method: Any,
    destination_scp_id: Any = None,
    owner: str = "",
) -> Job:
    """Queue a C-MOVE (into one of our SCPs) or C-GET; bad values → InvalidInput, unknown ids → NotFound."""
    node = nodes.get_scu(context.index, scu_id)
    ds = scu.identifier_dataset(level, identifier)  # validates level and identifier
    parameters: dict[str, Any] = {
        "scu_id": node.id,
        "level": str(ds.QueryRetrieveLevel),
        "identifier": dict(identifier),
        "method": method,
    }
    if method == "move":
        if destination_scp_id is None:
            raise InvalidInput("a C-MOVE needs destination_scp_id: the id of one of this node's SCPs")
        scp = nodes.get_scp(context.index, destination_scp_id)
        parameters["destination_scp_id"] = scp.id
        description = f"C-MOVE a {parameters['level'].lower()} from {node.name} into SCP {scp.name}"
    elif method == "get":
        description = f"C-GET a {parameters['level'].lower()} from {node.name}"
    else:
        raise InvalidInput(f'method must be "move" or "get", not {method!r}')
    return context.jobs.submit(RETRIEVE, description, parameters, owner=owner)


def _run_retrieve(context: SliceboxContext, job: JobContext) -> dict[str, Any]:
    p = job.parameters
    node = nodes.get_scu(context.index, p["scu_id"])
    destination = ""
    if p["method"] == "move":
        destination = nodes.get_scp(context.index, p["destination_scp_id"]).ae_title
    reported = {"completed": 0, "failed": 0, "warning": 0}

    def on_progress(counts: scu.SubOperations) -> None:
        for name in reported:
            value = getattr(counts, name)
            if value > reported[name]:
                job.count(name, value - reported[name])
                reported[name] = value
        total = None if counts.remaining is None else counts.done + counts.remaining
        job.progress(counts.done, total)

    counts = scu.retrieve(
        context,
        node,
        p["level"],
        p["identifier"],
        p["method"],
        destination_ae_title=destination,
        on_progress=on_progress,
        check_cancelled=job.check_cancelled,
    )
    return {"completed": counts.completed, "failed": counts.failed, "warning": counts.warning}
