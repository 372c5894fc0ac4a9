"""Tasks with sign-off (任务 / 签收 / 反馈) over the web (dispatch/tasks.py): sent from the console, signed off and
reported back from the phone page.

    GET  /api/tasks/targets             operator       whom a task can go to: everyone, groups, channels, grids,
                                                       units, persons (key, label, how many people)
    GET  /api/tasks                     operator       the latest tasks (?open=true: those not cancelled or closed),
                                                       each with who has and has not signed, their feedback, overdue
                                                       marks and reminders, a dispute's steps and follow-up
    POST /api/tasks                     operator       {"text", "targets": [key...], "deadline_s", "kind"?, "announce"?,
                                                       "incident_id"?, "follow_up_at"?}: sent to phones and on the air
                                                       (a dispute about an incident, without targets: to its grid)
    POST /api/tasks/{id}/cancel         operator       withdrawn (the phones are told); again: nothing changes
    POST /api/tasks/{id}/remind         operator       remind those not signed yet, now
    POST /api/tasks/{id}/steps          operator, or   {"stage", "note", "follow_up_at"?}: a dispute's lifecycle step
                                        its officer    (发现 调处 跟踪 联动 回访)
    GET  /api/tasks/{id}/feedback/{fid}/file  operator, or the one who sent it: a feedback's photo or voice note
    GET  /api/me/tasks                  guard|officer  my tasks, newest first, my own sign-off and feedback (and the
                                                       dispute stages)
    POST /api/me/tasks/{id}/sign        guard|officer  签收; again: nothing changes
    POST /api/me/tasks/{id}/feedback    guard|officer  {"text"}: 反馈 in words
    POST /api/me/tasks/{id}/photo       guard|officer  the photo itself as the body (image/jpeg, png or webp, at most
                                                       UPLOAD_MAX_BYTES; ?text= a caption)
    POST /api/me/tasks/{id}/voice       guard|officer  a voice note as the body (audio/wav, webm, ogg, mp4 or mpeg, at
                                                       most VOICE_MAX_S): transcribed by the service's recogniser

Uploads are stored under <data_dir>/tasks/<task id>/, named by the server (never by the client), and served only to
operators and to the responder who sent them. Operators' actions are written to the audit log (`task`,
`task_cancel`, `task_remind`, `task_step`, `task_file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import wave
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from bridge.decode import AudioDecodeError, decode_file
from bridge.web.auth import require
from bridge.web.context import WebContext, client_address, web_context
from bridge.web.routes_incidents import dispatch_of, responder_id_of
from bridge.web.users import Role, User
from dispatch.tasks import STAGES, TEXT_MAX, Conflict, NotFound, Task, TaskDesk, TaskError, UnknownTarget, targets

logger = logging.getLogger(__name__)

OPERATOR = (Role.OPERATOR,)
RESPONDER = (Role.GUARD, Role.OFFICER)
# under the app's body limit: the phone page shrinks a photo to fit, and keeps a voice note (WAV, 32 kB/s) under 30 s
UPLOAD_MAX_BYTES = 1_000_000
PHOTOS = {"image/jpeg": ("jpg", (b"\xff\xd8\xff",)), "image/png": ("png", (b"\x89PNG\r\n\x1a\n",)),
          "image/webp": ("webp", (b"RIFF",))}  # fmt: skip
VOICE_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/webm", "audio/ogg", "audio/mp4", "audio/mpeg"}
VOICE_MIN_S, VOICE_MAX_S = 0.3, 60.0  # a compressed note (webm, ogg) of a minute fits in UPLOAD_MAX_BYTES
MAX_DEADLINE_S = 7 * 86400
FILE_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "wav": "audio/wav"}


class TaskBody(BaseModel):
    text: str = Field(min_length=1, max_length=TEXT_MAX, description="The instruction, as said on the air.")
    targets: list[str] = Field([], max_length=50, description="Keys of GET /api/tasks/targets (a dispute about an "
                               "incident may leave them out: it goes to the grid of the incident's place).")
    deadline_s: float = Field(gt=0, le=MAX_DEADLINE_S, description="Seconds from now until sign-off is due.")
    kind: str = Field("instruction", pattern="^(instruction|dispute)$")
    announce: bool = Field(True, description="Spoken on the recipients' radio channels too.")
    incident_id: str | None = Field(None, max_length=100, description="The incident it is about (a dispute's).")
    follow_up_at: float | None = Field(None, gt=0, description="A dispute's first follow-up date (epoch s).")


class StepBody(BaseModel):
    stage: str = Field(description="发现, 调处, 跟踪, 联动 or 回访.")
    note: str = Field("", max_length=500)
    follow_up_at: float | None = Field(None, gt=0, description="The next follow-up date (epoch s); none at 回访 closes it.")


class FeedbackBody(BaseModel):
    text: str = Field(min_length=1, max_length=1000)


def tasks_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/tasks/targets")
    async def task_targets(ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> dict[str, Any]:
        desk = _desk(ctx)
        return {"targets": [{"key": t.key, "label": t.label, "count": len(t.responder_ids)}
                            for t in targets(desk.jurisdiction)], "stages": list(STAGES)}  # fmt: skip

    @router.get("/api/tasks")
    async def list_tasks(
        open: bool = False, limit: int = Query(50, ge=1, le=500), ctx: WebContext = Depends(web_context),
        user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        desk = _desk(ctx)
        tasks = [t for t in desk.store.list(limit=limit) if t.active or not open]
        return {"tasks": [desk.view(t) for t in tasks]}

    @router.post("/api/tasks")
    async def create(
        body: TaskBody, request: Request, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        desk = _desk(ctx)
        keys = body.targets
        if body.incident_id is not None:
            incident = ctx.service.dispatch.dispatcher.store.get(body.incident_id)
            if incident is None:
                raise HTTPException(404, f"no incident {body.incident_id!r}")
            if body.kind == "dispute" and not keys:  # pushed from the incident: to the grid answering for its place
                grid = incident.place_id and desk.jurisdiction.grid_of(incident.place_id)
                if not grid:
                    raise HTTPException(422, "the incident's place lies in no grid: name the grid (grid:ID)")
                keys = [f"grid:{grid}"]
        task = _do(lambda: desk.create(text=body.text, target_keys=keys, deadline_s=body.deadline_s,
                                       actor=user.name, kind=body.kind, announce=body.announce,  # type: ignore[arg-type]
                                       incident_id=body.incident_id, follow_up_at=body.follow_up_at))  # fmt: skip
        _audit(ctx, request, user, "task", task.id, kind=task.kind, targets=list(task.targets),
               recipients=len(task.recipients), announced=list(task.announced))  # fmt: skip
        return desk.view(task)

    @router.post("/api/tasks/{task_id}/cancel")
    async def cancel(
        task_id: str, request: Request, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        desk = _desk(ctx)
        task = _do(lambda: desk.cancel(task_id, actor=user.name))
        _audit(ctx, request, user, "task_cancel", task_id)
        return desk.view(task)

    @router.post("/api/tasks/{task_id}/remind")
    async def remind(
        task_id: str, request: Request, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        desk = _desk(ctx)
        reminded = _do(lambda: desk.remind(task_id))
        _audit(ctx, request, user, "task_remind", task_id, reminded=reminded)
        return {"reminded": reminded, "task": desk.view(desk.require(task_id))}

    @router.post("/api/tasks/{task_id}/steps")
    async def step(
        task_id: str, body: StepBody, request: Request, ctx: WebContext = Depends(web_context),
        user: User = require(Role.OPERATOR, *RESPONDER),
    ) -> dict[str, Any]:  # fmt: skip
        desk = _desk(ctx)
        if user.role in RESPONDER:  # an officer records the steps of the disputes sent to him, not of others
            _do(lambda: desk.mine(task_id, responder_id_of(ctx, user)))
        task = _do(lambda: desk.step(task_id, body.stage, actor=user.name, note=body.note, follow_up_at=body.follow_up_at))
        _audit(ctx, request, user, "task_step", task_id, stage=body.stage, follow_up_at=body.follow_up_at)
        return desk.view(task)

    @router.get("/api/tasks/{task_id}/feedback/{feedback_id}/file")
    async def feedback_file(
        task_id: str, feedback_id: int, request: Request, ctx: WebContext = Depends(web_context),
        user: User = require(Role.OPERATOR, *RESPONDER),
    ) -> FileResponse:  # fmt: skip
        desk = _desk(ctx)
        item = desk.store.feedback_item(task_id, feedback_id)
        mine = user.role in RESPONDER and item is not None and item.responder_id == user.responder_id
        if item is None or item.file is None or not (user.role in (Role.OPERATOR, Role.ADMIN) or mine):
            raise HTTPException(404, f"no file of feedback {feedback_id} of task {task_id!r} for you")
        path = _files(ctx) / item.file
        if not path.is_file():
            raise HTTPException(410, "the file is gone from the data folder")
        if user.role not in RESPONDER:
            _audit(ctx, request, user, "task_file", task_id, feedback=feedback_id, kind=item.kind)
        return FileResponse(path, media_type=FILE_TYPES[path.suffix.lstrip(".")], headers={"Cache-Control": "private"})

    @router.get("/api/me/tasks")
    async def my_tasks(ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict[str, Any]:
        desk, rid = _desk(ctx), responder_id_of(ctx, user)
        return {"tasks": [desk.view(t, responder_id=rid) for t in desk.store.list(limit=50, responder_id=rid)
                          if t.cancelled_at is None], "stages": list(STAGES)}  # fmt: skip

    @router.post("/api/me/tasks/{task_id}/sign")
    async def sign(task_id: str, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict:
        desk, rid = _desk(ctx), responder_id_of(ctx, user)
        return desk.view(_do(lambda: desk.sign(task_id, rid)), responder_id=rid)

    @router.post("/api/me/tasks/{task_id}/feedback")
    async def feedback(
        task_id: str, body: FeedbackBody, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)
    ) -> dict[str, Any]:
        desk, rid = _desk(ctx), responder_id_of(ctx, user)
        _do(lambda: desk.report(task_id, rid, "text", body.text))
        return desk.view(desk.require(task_id), responder_id=rid)

    @router.post("/api/me/tasks/{task_id}/photo")
    async def photo(
        task_id: str, request: Request, text: str = Query("", max_length=TEXT_MAX),
        ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER),
    ) -> dict[str, Any]:  # fmt: skip
        desk, rid = _desk(ctx), responder_id_of(ctx, user)
        _do(lambda: _writable(desk.mine(task_id, rid)))
        kind = _media_type(request)
        if kind not in PHOTOS:
            raise HTTPException(415, f"a photo is sent as {', '.join(PHOTOS)}, not {kind or 'no type'}")
        data = await _body(request, UPLOAD_MAX_BYTES)
        ext, magic = PHOTOS[kind]
        if not data.startswith(magic) or (ext == "webp" and data[8:12] != b"WEBP"):
            raise HTTPException(422, f"the body is not a {kind} image")
        name = await asyncio.to_thread(_store, _files(ctx), task_id, rid, ext, data)
        _do(lambda: desk.report(task_id, rid, "photo", text, file=name))
        return desk.view(desk.require(task_id), responder_id=rid)

    @router.post("/api/me/tasks/{task_id}/voice")
    async def voice(task_id: str, request: Request, ctx: WebContext = Depends(web_context),
                    user: User = require(*RESPONDER)) -> dict[str, Any]:  # fmt: skip
        desk, rid = _desk(ctx), responder_id_of(ctx, user)
        _do(lambda: _writable(desk.mine(task_id, rid)))
        kind = _media_type(request)
        if kind not in VOICE_TYPES:
            raise HTTPException(415, f"a voice note is sent as {', '.join(sorted(VOICE_TYPES))}, not {kind or 'no type'}")
        recognition = ctx.service.recognition
        if recognition is None:
            raise HTTPException(503, "speech recognition is off in this service: report back in words")
        pcm = await asyncio.to_thread(_decode, await _body(request, UPLOAD_MAX_BYTES))
        seconds = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
        if not VOICE_MIN_S <= seconds <= VOICE_MAX_S:
            raise HTTPException(422, f"a voice note lasts {VOICE_MIN_S}-{VOICE_MAX_S:.0f} s, not {seconds:.1f} s")
        try:
            transcript = await recognition.pool.transcribe(pcm, f"{task_id}-voice")
        except Exception as e:  # RecognitionFailed, mostly: the note is not lost for the guard, he can say it again
            logger.exception("task %s: the voice note of %s could not be recognised", task_id, rid)
            raise HTTPException(503, "the voice note could not be recognised: try again, or report back in words") from e
        name = await asyncio.to_thread(_store, _files(ctx), task_id, rid, "wav", _wav(pcm))
        _do(lambda: desk.report(task_id, rid, "voice", transcript.shown, pinyin=transcript.pinyin, file=name))
        return desk.view(desk.require(task_id), responder_id=rid)

    return router


# --- helpers ------------------------------------------------------------------------------------------------------


def _desk(ctx: WebContext) -> TaskDesk:
    return dispatch_of(ctx).tasks


def _do(action: Any) -> Any:
    """A desk call, its refusals as HTTP answers: unknown recipients 422, no such task 404, a state refusing it 409."""
    try:
        return action()
    except NotFound as e:
        raise HTTPException(404, str(e)) from e
    except Conflict as e:
        raise HTTPException(409, str(e)) from e
    except (UnknownTarget, TaskError) as e:
        raise HTTPException(422, str(e)) from e


def _writable(task: Task) -> None:
    if task.cancelled_at is not None:
        raise Conflict(f"task {task.id} was cancelled")


def _audit(ctx: WebContext, request: Request, user: User, action: Any, target: str, **detail: Any) -> None:
    ctx.audit.append(user=user.name, role=str(user.role), action=action, target=target, client=client_address(request),
                     **detail)  # fmt: skip


def _files(ctx: WebContext) -> Path:
    return ctx.service.config.storage.data_dir / "tasks"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _body(request: Request, limit: int) -> bytes:
    """The upload, refused with 413 past `limit` (counted as it arrives, whatever Content-Length claims)."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise HTTPException(413, f"at most {limit} bytes")
    if not received:
        raise HTTPException(422, "the body is empty")
    return bytes(received)


def _store(folder: Path, task_id: str, responder_id: str, ext: str, data: bytes) -> str:
    """The file under <data_dir>/tasks/<task id>/, named by the server; returns its path relative to the folder."""
    directory = folder / task_id
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=f"{responder_id}-", suffix=f".{ext}", delete=False) as f:
        f.write(data)
    return f"{task_id}/{Path(f.name).name}"


def _decode(data: bytes) -> bytes:
    """Any audio ffmpeg reads -> 16 kHz mono int16; 422 for what it cannot."""
    with tempfile.NamedTemporaryFile(suffix=".audio") as f:
        f.write(data)
        f.flush()
        try:
            return decode_file(f.name)
        except AudioDecodeError as e:
            raise HTTPException(422, f"not audio that can be decoded: {str(e).split(': ', 1)[-1]}") from e


def _wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with contextlib.closing(wave.open(out, "wb")) as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return out.getvalue()
