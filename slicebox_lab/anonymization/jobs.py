"""Bulk anonymization as a job (``anonymize``): many images replaced by their de-identified versions.

Parameters ``{"image_ids", "profile", "tag_values"}``: ``profile`` is the profile's JSON (what
``POST /anonymization/anonymize`` was given), ``tag_values`` maps an image id (as text) to the tag
values written into that image after the profile.  The images go in chunks through
``SliceboxContext.anonymize_many`` (the one way to anonymize in place: keys recorded, results
ingested), whose index work is done once per chunk; the originals of each chunk are then deleted
in one transaction.  Within a chunk images are done a few at a time (the flushes of one overlap
the CPU work of another); the chunks' order is kept, so ``progress_done`` always counts a prefix
of the list and a resumed job skips exactly what is done.  An image that no longer exists is
counted ``skipped``; one that cannot be anonymized (a burned-in image the profile refuses, say)
is counted ``failed`` with its reason in the result, and the job goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from slicebox_lab.dicom.tagpath import parse_tag_values
from slicebox_lab.errors import InvalidInput, NotFound, SliceboxError
from slicebox_lab.jobs import Job, JobContext, image_id_list
from slicebox_lab.upload import PendingAnonymization

from .profile import Profile

if TYPE_CHECKING:
    from slicebox_lab.context import SliceboxContext

__all__ = ["ANONYMIZE", "MAX_IMAGES", "register_anonymization_jobs", "submit_anonymize"]

ANONYMIZE = "anonymize"
MAX_IMAGES = 100_000
#: images anonymized at the same time within one job
PARALLEL = 4
#: images whose index work (keys, rows, deletion of the originals) is done together
CHUNK = PARALLEL * 4
#: failure reasons kept in the result (the count is always complete)
MAX_REASONS = 100


def register_anonymization_jobs(context: SliceboxContext) -> None:
    context.jobs.register(ANONYMIZE, lambda job: _run(context, job))


def _image_ids(value: Any) -> list[int]:
    return image_id_list(value, "imageIds", MAX_IMAGES)


def _tag_values_by_image(value: Any) -> dict[str, list[dict[str, Any]]]:
    """``[{"imageId": 1, "tagValues": [...]}]`` (Slicebox's imageTagValuesSet) validated, keyed by id text."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidInput('"imageTagValues" must be a JSON array of {"imageId": ..., "tagValues": [...]} objects')
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in value:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("imageId"), int):
            raise InvalidInput('each entry of "imageTagValues" needs an integer "imageId" and "tagValues"')
        values = parse_tag_values(entry.get("tagValues"), "tagValues")
        out[str(entry["imageId"])] = [v.to_json() for v in values]
    return out


def submit_anonymize(
    context: SliceboxContext,
    image_ids: Any,
    profile_json: Mapping[str, Any],
    image_tag_values: Any = None,
    owner: str = "",
) -> Job:
    """Queue the anonymization of ``image_ids``; bad input → InvalidInput before anything is queued."""
    ids = _image_ids(image_ids)
    profile = profile_from_json(profile_json)
    tag_values = _tag_values_by_image(image_tag_values)
    options = ", ".join(option.name for option in profile.ordered_options) or "basic profile"
    parameters = {"image_ids": ids, "profile": dict(profile_json), "tag_values": tag_values}
    return context.jobs.submit(ANONYMIZE, f"anonymize {len(ids)} images ({options})", parameters, owner, total=len(ids))


def profile_from_json(body: Mapping[str, Any]) -> Profile:
    """The profile a JSON body names (``Profile.from_json``), with InvalidInput for a bad one."""
    try:
        return Profile.from_json(body)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def _run(context: SliceboxContext, job: JobContext) -> dict[str, Any]:
    p = job.parameters
    ids = _image_ids(p["image_ids"])
    profile = profile_from_json(p.get("profile") or {})
    tag_values = {key: parse_tag_values(values) for key, values in (p.get("tag_values") or {}).items()}
    done = int(job.resume_from.get("progress_done", 0) or 0)
    job.progress(done, len(ids))
    for name in ("anonymized", "skipped", "failed"):
        job.count(name, 0)
    images: list[int] = []
    failed: dict[str, str] = {}
    by_image = {int(key): values for key, values in tag_values.items()}

    def start(at: int) -> PendingAnonymization | None:
        return context.start_anonymizing(ids[at : at + CHUNK], profile, by_image, writers) if at < len(ids) else None

    # three stages overlap: the workers write the next chunk's copies while this one's keys, flushes
    # and rows are done, and the previous chunk's originals are deleted (its progress is reported after
    # that deletion, so a resumed job never skips an original left behind)
    with (
        ThreadPoolExecutor(PARALLEL, thread_name_prefix="slicebox-anonymize") as writers,
        ThreadPoolExecutor(PARALLEL, thread_name_prefix="slicebox-anonymize-flush") as flushers,
        ThreadPoolExecutor(1, thread_name_prefix="slicebox-anonymize-delete") as deleter,
    ):
        deleting: tuple[Future[list[int]], int] | None = None

        def deleted() -> None:
            if deleting is not None:
                deleting[0].result()
                job.progress(deleting[1], len(ids))

        pending = start(done)
        try:
            while pending is not None:
                job.check_cancelled()
                chunk = ids[done : done + CHUNK]
                following = start(done + CHUNK)
                current, pending = pending, following
                originals: list[int] = []
                for image_id, outcome in zip(chunk, context.finish_anonymizing(current, flushers), strict=True):
                    if isinstance(outcome, NotFound):
                        job.count("skipped")
                    elif isinstance(outcome, SliceboxError):
                        job.count("failed")
                        if len(failed) < MAX_REASONS:
                            failed[str(image_id)] = outcome.message
                    else:
                        images.append(outcome.image.id)
                        if outcome.image.id != image_id:
                            originals.append(image_id)
                        job.count("anonymized")
                # the originals of a chunk go in one transaction; a crash before it leaves both versions,
                # and the resumed job redoes the chunk (same anonymous result, then the deletion)
                deleted()
                done += len(chunk)
                deleting = deleter.submit(context.delete_images, originals), done
            deleted()
        except BaseException:  # cancelled or failed: the copies written ahead are removed, and a chunk
            if pending is not None:  # whose deletion went through counts as done (resumed after it)
                pending.discard()
            with contextlib.suppress(Exception):
                deleted()
            raise
    return {"images": images, "failed": failed}
