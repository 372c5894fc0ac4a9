"""Audio over WebSocket, always 16 kHz mono int16 PCM in binary messages (the browser resamples in its AudioContext):

    GET /api/me/talk                          guard|officer  the channels the page can talk on, and the default
    WS  /api/ptt?channel=ID                   guard|officer  one press of the talk button: PCM in, then the text "end"
                                                             (or a disconnect) on release; the audio goes into the
                                                             channel's PushSource, exactly like a radio's
        &sos=INCIDENT_ID                                     the hot microphone after the responder's own SOS (at
                                                             most `dispatch.sos.hot_mic_s`): what it hears is added
                                                             to that incident (dispatch/sos.py), not dispatched apart
    WS  /api/channels/{id}/listen             operator       the channel's received audio, 20 ms frames out
    WS  /api/channels/{id}/talk               operator       one talk-back press: PCM in, "end" on release; it is
                                                             transmitted on the channel at command priority, and the
                                                             result is sent back as {"type": "result", ...}

A press is one WebSocket, so a dropped connection ends the press like releasing the button. A channel takes one press
at a time, as a radio channel does: a second is told {"type": "busy", "by": NAME} (the talker as the jurisdiction
names him) and closed (1013). The same user pressing again (a phone that vanished mid-press, a quick re-press)
takes the channel from his earlier press, and an SOS's hot microphone is never refused and holds the channel while
it is open. Messages larger than
MAX_MESSAGE_BYTES, and presses longer than MAX_PRESS_S, close the socket (1009 / 1008); audio the channel's buffer
refuses is counted by the source and reported to the page once per press.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect, WebSocketException, status

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from bridge.channel import Channel
from bridge.sources.push import PushSource
from bridge.web.auth import require
from bridge.web.context import WebContext, web_context
from bridge.web.sockets import close_quietly, until_client_leaves
from bridge.web.users import Role, User
from dispatch.gazetteer import Responder
from dispatch.sos import SosError
from hardware.transmit import Priority

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = SAMPLE_RATE * SAMPLE_WIDTH  # one second of audio in one message is already far more than a page sends
MAX_PRESS_S = 60.0  # a stuck button, like a radio's time-out timer
HOT_MIC_SLACK_S = 2.0  # an SOS's hot microphone may run this much past its time (the page stops it, the network lags)
RELEASE_SILENCE_MS = 300  # silence pushed after the release beyond the segmenter's hang-over, so the utterance ends now


def audio_router() -> APIRouter:
    router = APIRouter()
    # channel id -> the press holding its talk button: one at a time, as on a radio channel (two at once would
    # interleave in its one PushSource and be heard by nobody)
    pressing: dict[str, _Press] = {}

    @router.get("/api/me/talk")
    async def talk_channels(
        ctx: WebContext = Depends(web_context), user: User = require(Role.GUARD, Role.OFFICER)
    ) -> dict[str, Any]:
        channels = _push_channels(ctx)
        return {"channels": [{"id": c.config.id, "name": c.config.name} for c in channels],
                "default": _default_channel(ctx, user, channels)}

    @router.websocket("/api/ptt")
    async def push_to_talk(
        ws: WebSocket, channel: str | None = None, sos: str | None = None,
        ctx: WebContext = Depends(web_context), user: User = require(Role.GUARD, Role.OFFICER),
    ) -> None:  # fmt: skip
        channels = _push_channels(ctx)
        chosen = next((c for c in channels if c.config.id == (channel or _default_channel(ctx, user, channels))), None)
        if chosen is None:
            raise WebSocketException(status.WS_1008_POLICY_VIOLATION, f"no push-to-talk channel {channel!r}")
        source: PushSource = chosen.source  # type: ignore[assignment]
        hot_mic, max_s = None, MAX_PRESS_S
        if sos is not None:  # refused at the handshake unless it is this responder's own open SOS
            desk = ctx.service.dispatch.sos if ctx.service.dispatch is not None else None
            try:
                if desk is None:
                    raise SosError("dispatch is disabled")
                hot_mic = desk.open_hot_mic(sos, user.responder_id or "", chosen.config.id)
            except SosError as e:
                raise WebSocketException(status.WS_1008_POLICY_VIOLATION, str(e)) from None
            max_s = desk.rules.hot_mic_s + HOT_MIC_SLACK_S
        await ws.accept()
        channel_id = chosen.config.id
        holder = pressing.get(channel_id)
        if holder is not None and hot_mic is None and holder.user != user.name:
            await ws.send_json({"type": "busy", "channel": channel_id, "by": holder.shown})
            logger.info("push-to-talk by %s on %s refused: %s is talking", user.name, channel_id, holder.user)
            await ws.close(code=status.WS_1013_TRY_AGAIN_LATER, reason="channel busy")
            return
        # taken with no await since it was found free (or his, or an SOS's to take): two presses at the same instant
        # cannot both take it
        press = _Press(user.name, _speaker_name(ctx, user), ws)
        pressing[channel_id] = press
        refused, accepted = 0, False
        try:
            if holder is not None and hot_mic is None:  # his own earlier press: a phone that vanished, a quick re-press
                await close_quietly(holder.ws, status.WS_1008_POLICY_VIOLATION, "superseded by a new press")
            elif holder is not None:  # an SOS's hot microphone is never refused, and holds the channel from now on
                logger.warning("the hot microphone of SOS %s on %s while %s is talking: their audio interleaves", sos,
                               channel_id, holder.user)  # fmt: skip
            await ws.send_json({"type": "ready", "channel": channel_id})
            async for pcm in _press(ws, max_s):
                if source.push(pcm, contiguous=accepted):  # the press's first accepted audio is stamped by its arrival
                    accepted = True
                else:
                    refused += 1
                    if refused == 1:
                        await ws.send_json({"type": "refused", "reason": "channel buffer full or bad audio"})
        finally:
            held = pressing.get(channel_id) is press
            if held:
                del pressing[channel_id]
            if held or channel_id not in pressing:  # never into the press that took the channel over
                # the radio's squelch closing: silence past the segmenter's hang-over ends the utterance at once
                tail_ms = chosen.config.vad.stop_window_ms + RELEASE_SILENCE_MS
                source.push(bytes(SAMPLE_RATE * SAMPLE_WIDTH * tail_ms // 1000), paced=False, contiguous=accepted)
            if hot_mic is not None:
                desk.close_hot_mic(hot_mic)
            logger.info("push-to-talk by %s on %s released (%d chunks refused)%s", user.name, channel_id, refused,
                        f" (the hot microphone of SOS {sos})" if hot_mic is not None else "")  # fmt: skip
        await close_quietly(ws)

    @router.websocket("/api/channels/{channel_id}/listen")
    async def listen(
        ws: WebSocket, channel_id: str, ctx: WebContext = Depends(web_context), user: User = require(Role.OPERATOR)
    ) -> None:
        chosen = _channel(ctx, channel_id)
        await ws.accept()
        frames = chosen.listen()

        async def send() -> None:
            async for pcm in frames:
                await ws.send_bytes(pcm)

        tasks = [asyncio.create_task(send()), asyncio.create_task(until_client_leaves(ws))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await frames.aclose()  # type: ignore[attr-defined]
        await close_quietly(ws)  # the end of the feed, said with a close frame when the client is still there

    @router.websocket("/api/channels/{channel_id}/talk")
    async def talk_back(
        ws: WebSocket, channel_id: str, ctx: WebContext = Depends(web_context), user: User = require(Role.OPERATOR)
    ) -> None:
        transmitter = ctx.service.transmitters.get(channel_id)
        if transmitter is None:
            raise WebSocketException(status.WS_1008_POLICY_VIOLATION, f"channel {channel_id!r} cannot transmit")
        await ws.accept()
        await ws.send_json({"type": "ready", "channel": channel_id})
        result = await transmitter.transmit(_press(ws), priority=Priority.COMMAND, label=f"talk-back by {user.name}")
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.send_json({"type": "result", "status": result.status, "keyed_s": round(result.keyed, 2),
                                "error": result.error})
        await close_quietly(ws)

    return router


async def _press(ws: WebSocket, max_s: float = MAX_PRESS_S) -> AsyncIterator[bytes]:
    """The PCM of one press: binary messages until "end", a disconnect, an oversized message or `max_s`."""
    deadline = time.monotonic() + max_s
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                message = await ws.receive()
        except TimeoutError:
            await close_quietly(ws, status.WS_1008_POLICY_VIOLATION, f"held longer than {max_s:g} s")
            return
        if message["type"] == "websocket.disconnect":
            return
        pcm = message.get("bytes")
        if pcm is None:
            if message.get("text") == "end":
                return
            continue
        if len(pcm) > MAX_MESSAGE_BYTES:
            await close_quietly(ws, status.WS_1009_MESSAGE_TOO_BIG, f"messages of at most {MAX_MESSAGE_BYTES} bytes")
            return
        if len(pcm) % SAMPLE_WIDTH:
            continue  # not int16 PCM: dropped (a well-behaved page never sends it)
        yield pcm


@dataclass(slots=True, eq=False)
class _Press:
    """Who holds a channel's talk button, and the socket of that press."""

    user: str
    shown: str  # who the others are told is talking
    ws: WebSocket


def _responder(ctx: WebContext, user: User) -> Responder | None:
    """The jurisdiction's responder a guard's or officer's account speaks for; None for an account that speaks for
    none (or one the jurisdiction no longer has)."""
    if user.responder_id and ctx.service.dispatch is not None:
        with contextlib.suppress(KeyError):
            return ctx.service.dispatch.jurisdiction.responder(user.responder_id)
    return None


def _speaker_name(ctx: WebContext, user: User) -> str:
    """Who the others are told is talking: the responder as the jurisdiction names him (万寿路花鸟市场保安), else the
    login name."""
    responder = _responder(ctx, user)
    return responder.name if responder is not None else user.name


def _push_channels(ctx: WebContext) -> list[Channel]:
    return [c for c in ctx.service.channels if isinstance(c.source, PushSource)]


def _default_channel(ctx: WebContext, user: User, channels: list[Channel]) -> str | None:
    """The responder's own radio channel when the page can talk on it, else the first channel it can talk on."""
    responder = _responder(ctx, user)
    own = responder.channel if responder is not None else None
    ids = [c.config.id for c in channels]
    return own if own in ids else (ids[0] if ids else None)


def _channel(ctx: WebContext, channel_id: str) -> Channel:
    for c in ctx.service.channels:
        if c.config.id == channel_id:
            return c
    raise WebSocketException(status.WS_1008_POLICY_VIOLATION, f"no channel {channel_id!r}")
