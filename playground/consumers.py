"""The AI Playground's WebSocket: one prompt, several chat endpoints, each streamed by its own task.

Protocol (JSON text frames).

Client → server::

    {"type": "send", "conversation": 12 | null, "prompt": "…", "images": ["<upload id>", …],
     "panes": [{"pane": 0, "endpoint": "local-smollm2-chat", "system": "…",
                "params": {"temperature": 0.7, "max_tokens": 256, "top_p": 1, "stop": ["…"],
                           "thinking": true, "budget_tokens": 64}}, …]}
    {"type": "stop"}
    {"type": "send", …, "replace_last": true}              edit and resend: the prompt replaces the
                                                            last turn of every pane sent to
    {"type": "regenerate", "conversation": 12, "pane": <a pane as in send>}   that pane's last prompt
                                                            answered again in place of its last answer
    {"type": "layout", "conversation": 12, "panes": [<as in send>, …]}   the page's panes changed
                                                            (added, removed, settings edited): saved
                                                            so the conversation reopens as it is shown

Server → client (``pane`` is the pane's index in the conversation)::

    {"type": "conversation", "id": 12, "title": "…"}       a new conversation was saved
    {"type": "turn", "pane": 0, "id": "turn-0-3", "html": "…"}   a turn starts (rendered partial)
    {"type": "delta", "pane": 0, "reasoning": "…",          coalesced. Reasoning: raw text, the page
     "append": "<p>…</p>", "tail": "<p>…</p>"}              appends it as a text node. The answer,
                                                            when it grew: its Markdown rendered and
                                                            sanitised server-side as it streams
                                                            (LiveMarkdown): blocks finished since the
                                                            last delta, to append, and the block being
                                                            written, replacing the previous tail
    {"type": "done", "pane": 0, "id": "turn-0-3", "html": "…"}   the finished turn (Markdown
                                                               rendered and sanitised server-side)
    {"type": "retract", "pane": 0, "id": "turn-0-3"}         that turn was taken away (regenerate,
                                                            edit and resend): the page removes it
    {"type": "idle"}                                         no pane is streaming any more
    {"type": "layout", "conversation": 12}                   a ``layout`` was saved
    {"type": "error", "message": "…"}                        a message the server could not use

Signing out closes the sockets of that session with 4401 (after an ``error`` frame), and so does
deleting the session (an expired one cleared, or removed in the admin) or deactivating or deleting
the user: each socket joins a channel-layer group for its session and one for its user.

Errors of one endpoint (rate limit, provider down, bad parameter) end that pane's turn with the
error shown in it (in the ``done`` partial); the other panes go on. Each pane's thread holds only
its own answers. Every turn records the settings it was sent with (``turn["settings"]``, taken from
the request body itself) and shows them. A pane the page no longer shows is kept (its number names
its thread) but marked ``"removed": true``, so a reopened conversation shows the panes it was left with. Stop and disconnect cancel every pane's task; the task then closes its event
stream, which stops generation upstream.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import DatabaseError
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from endpoints import registry, service
from endpoints.errors import ServingError
from endpoints.events import Finish, ReasoningDelta, TextDelta, Usage
from endpoints.providers import get_provider
from endpoints.schemas import CHAT

from .models import Conversation, PlaygroundImage
from .render import LiveMarkdown, turn_html

log = logging.getLogger("fondasi.playground")

#: Largest client frame accepted. Images travel by upload id, so frames are small.
MAX_MESSAGE_BYTES: int = getattr(settings, "PLAYGROUND_MAX_MESSAGE_BYTES", 256 * 1024)
MAX_PANES = 6
MAX_IMAGES = 20  # the chat app's limit (spec §5)
#: Deltas are buffered and sent at most this often per pane, so fast panes do not flood the page.
FLUSH_SECONDS = 0.075
CLOSE_UNAUTHENTICATED = 4401


class ProtocolError(Exception):
    """A client message the consumer cannot use; answered with an error frame."""


class PlaygroundConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.tasks: dict[int, asyncio.Task] = {}
        self.supervisor: asyncio.Task | None = None
        self.conversation: Conversation | None = None
        self.save_lock = asyncio.Lock()
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.send_json({"type": "error", "message": "Sign in to use the playground."})
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.signed_out = False
        session = self.scope.get("session")
        self.sign_out_groups = [user_group(user.pk)]
        if session is not None and session.session_key:
            self.sign_out_groups.append(session_group(session.session_key))
        if self.channel_layer is not None:
            for group in self.sign_out_groups:
                await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.channel_layer is not None:
            for group in getattr(self, "sign_out_groups", ()):
                await self.channel_layer.group_discard(group, self.channel_name)
        await self.cancel_all()

    async def playground_signed_out(self, event: dict) -> None:
        """The session signed out (or was deleted, or the user deactivated): stop and close with 4401."""
        if self.signed_out:
            return
        self.signed_out = True
        self.user = None  # no frame is used from now on
        await self.safe_send({"type": "error", "message": "Signed out: sign in again to use the playground."})
        await self.close(code=CLOSE_UNAUTHENTICATED)
        await self.cancel_all()

    # --- receiving ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """Decode one frame; anything malformed is answered with an error, the socket stays open."""
        if not getattr(self, "user", None):
            return
        try:
            if text_data is None:
                raise ProtocolError("Send JSON text frames.")
            if len(text_data.encode()) > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"Message too large: at most {MAX_MESSAGE_BYTES // 1024} KiB (attach images by upload).")
            try:
                content = json.loads(text_data)
            except ValueError:
                raise ProtocolError("Malformed message: not valid JSON.") from None
            if not isinstance(content, dict) or not isinstance(content.get("type"), str):
                raise ProtocolError("Malformed message: expected an object with a 'type'.")
            await self.receive_json(content)
        except ProtocolError as exc:
            await self.send_json({"type": "error", "message": str(exc)})

    async def receive_json(self, content: dict, **kwargs: Any) -> None:
        kind = content["type"]
        if kind == "stop":
            await self.cancel_all()
        elif kind == "send":
            await self.start(content)
        elif kind == "layout":
            await self.save_layout(content)
        elif kind == "regenerate":
            await self.regenerate(content)
        else:
            raise ProtocolError(f"Unknown message type '{kind}'; expected 'send', 'stop', 'layout' or 'regenerate'.")

    # --- one prompt to every pane ------------------------------------------------------------

    async def start(self, content: dict) -> None:
        if any(not task.done() for task in self.tasks.values()):
            raise ProtocolError("Still answering: press Stop or wait before sending again.")
        prompt, image_ids, panes = validate_send(content)
        images = await self.load_images(image_ids)
        conversation = await self.load_conversation(content.get("conversation"), prompt)
        endpoints = await registry.asnapshot()
        self.conversation = conversation
        self.tasks = {}
        if content.get("replace_last") is True and content.get("conversation") is not None:
            # Edit and resend: the new prompt takes the place of the last turn in every pane sent to.
            for spec in panes:
                if spec["pane"] < len(conversation.panes):
                    await self.retract_last(spec["pane"], conversation.panes[spec["pane"]])
        apply_layout(conversation, panes)
        for spec in panes:
            index = spec["pane"]
            pane = conversation.panes[index]
            self.tasks[index] = asyncio.create_task(self.run_pane(index, pane, prompt, images, endpoints))
        await self.save()
        if content.get("conversation") is None:
            await self.send_json({"type": "conversation", "id": conversation.pk, "title": conversation.title})
        self.supervisor = asyncio.create_task(self.watch(list(self.tasks.values())))

    async def regenerate(self, content: dict) -> None:
        """Answer one pane's last prompt again (its images too) in place of its last answer, with the
        settings the pane shows (those the page sends, as for ``send``)."""
        if any(not task.done() for task in self.tasks.values()):
            raise ProtocolError("Still answering: press Stop or wait before regenerating.")
        conversation_id = content.get("conversation")
        if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
            raise ProtocolError("'conversation' must be a conversation id.")
        spec = validate_panes([content.get("pane")])[0]
        current = self.conversation
        conversation = current if current is not None and current.pk == conversation_id else \
            await self.load_conversation(conversation_id, "")
        index = spec["pane"]
        if index >= len(conversation.panes) or not conversation.panes[index]["turns"]:
            raise ProtocolError("This pane has no answer to regenerate yet.")
        pane = conversation.panes[index]
        last = pane["turns"][-1]
        images = await self.load_images([str(image["id"]) for image in last.get("images") or [] if image.get("id")])
        endpoints = await registry.asnapshot()
        self.conversation = conversation
        await self.retract_last(index, pane)
        pane.update(endpoint=spec["endpoint"], system=spec["system"], params=spec["params"], removed=False)
        self.tasks = {index: asyncio.create_task(self.run_pane(index, pane, last["prompt"], images, endpoints))}
        await self.save()
        self.supervisor = asyncio.create_task(self.watch(list(self.tasks.values())))

    async def retract_last(self, index: int, pane: dict) -> None:
        """Take a pane's last turn (and, when it joined the thread, its two messages) away; the page
        removes it."""
        if not pane.get("turns"):
            return
        number = len(pane["turns"]) - 1
        last = pane["turns"].pop()
        kept = last.get("kept", last.get("error") is None and bool(last.get("answer") or last.get("reasoning")))
        if kept and len(pane.get("messages") or []) >= 2:
            del pane["messages"][-2:]
        await self.safe_send({"type": "retract", "pane": index, "id": f"turn-{index}-{number}"})

    async def save_layout(self, content: dict) -> None:
        """Keep the page's panes (endpoints, settings, which are shown) in the saved conversation."""
        conversation_id = content.get("conversation")
        if conversation_id is None:
            raise ProtocolError("'conversation' must be a conversation id.")
        panes = validate_panes(content.get("panes"), allow_empty=True)
        current = self.conversation
        if current is not None and current.pk == conversation_id:
            conversation = current  # possibly streaming: its pane dicts are the ones the tasks fill
        else:
            conversation = await self.load_conversation(conversation_id, "")
        apply_layout(conversation, panes)
        async with self.save_lock:
            await database_sync_to_async(conversation.save)()
        await self.send_json({"type": "layout", "conversation": conversation.pk})

    async def watch(self, tasks: list[asyncio.Task]) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.safe_send({"type": "idle"})

    async def cancel_all(self) -> None:
        tasks = [task for task in self.tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_pane(self, index: int, pane: dict, prompt: str, images: list[dict], endpoints: dict) -> None:
        """Stream one endpoint's answer into pane ``index`` and keep it in that pane's thread only."""
        endpoint = endpoints.get(pane["endpoint"])
        vision = can_see_images(endpoint)
        sent_images = images if vision else []
        user_message = {"role": "user", "content": user_content(prompt, sent_images)}
        body = request_body(pane, user_message)
        turn: dict[str, Any] = {
            "prompt": prompt, "endpoint": pane["endpoint"], "settings": sent_settings(pane["endpoint"], body), "images": [image["report"] | {"id": image["id"]} for image in images],
            "reasoning": "", "answer": "", "figures": {}, "error": None, "stopped": False, "streaming": True,
            "notice": "" if vision or not images else "This endpoint cannot see images: they were not sent to it.",
        }
        number = len(pane["turns"])
        pane["turns"].append(turn)
        turn_id = f"turn-{index}-{number}"
        await self.safe_send({"type": "turn", "pane": index, "id": turn_id, "html": turn_html(index, number, turn)})

        reasoning: list[str] = []
        text: list[str] = []
        signature: str | None = None
        usage: Usage | None = None
        finish: str | None = None
        started = time.perf_counter()
        first_token = first_text = reasoning_started = None
        pending_reasoning: list[str] = []
        answer = LiveMarkdown()
        last_flush = 0.0

        async def flush() -> None:
            nonlocal last_flush
            if pending_reasoning or answer.changed:
                frame: dict[str, Any] = {"type": "delta", "pane": index, "reasoning": "".join(pending_reasoning)}
                if answer.changed:
                    frame["append"], frame["tail"] = answer.flush()
                await self.safe_send(frame)
                pending_reasoning.clear()
            last_flush = time.perf_counter()

        stream = None
        try:
            query = await service.prepare(pane["endpoint"], body)
            stream = await query.stream()
            async for event in stream:
                kind = type(event)
                now = time.perf_counter()
                if kind is ReasoningDelta and event.index == 0:
                    first_token = first_token or now
                    reasoning_started = reasoning_started or now
                    reasoning.append(event.text)
                    pending_reasoning.append(event.text)
                    if event.signature is not None:
                        signature = event.signature
                elif kind is TextDelta and event.index == 0:
                    first_token = first_token or now
                    first_text = first_text or now
                    text.append(event.text)
                    answer.add(event.text)
                elif kind is Finish and event.index == 0:
                    finish = event.reason
                elif kind is Usage:
                    usage = event
                if now - last_flush >= FLUSH_SECONDS:
                    await flush()
            await flush()
        except asyncio.CancelledError:
            turn["stopped"] = True  # Stop pressed, or the page went away: finish the turn below
        except ServingError as exc:
            turn["error"] = {"message": exc.message, "code": exc.code, "status": exc.status, "retry_after": exc.retry_after}
        except Exception as exc:  # a bug or a broken provider must end this pane only, readably
            log.exception("playground pane %s (%s) failed", index, pane["endpoint"])
            turn["error"] = {"message": f"Unexpected error: {exc}", "code": "INTERNAL_ERROR", "status": 500, "retry_after": None}
        finally:
            if stream is not None:
                await stream.aclose()  # stops generation upstream

        ended = time.perf_counter()
        turn.update(reasoning="".join(reasoning), answer="".join(text), streaming=False, finish_reason=finish)
        turn["figures"] = figures(started, first_token, first_text, reasoning_started, ended, usage, len(text))
        if turn["error"] is None and (text or reasoning):
            pane["messages"].append(user_message)
            pane["messages"].append(assistant_message(turn["reasoning"], signature, turn["answer"]))
            turn["kept"] = True  # these two messages belong to this turn (Regenerate takes them away)
        await self.save()
        await self.safe_send({"type": "done", "pane": index, "id": turn_id, "html": turn_html(index, number, turn)})

    # --- helpers -----------------------------------------------------------------------------

    async def safe_send(self, content: dict) -> None:
        try:
            await self.send_json(content)
        except Exception:  # the socket is gone; the task still saves what it has
            pass

    async def save(self) -> None:
        conversation = self.conversation
        if conversation is None:
            return
        async with self.save_lock:
            if conversation.pk is None:
                await database_sync_to_async(conversation.save)()
                return
            try:  # never an INSERT: a conversation deleted meanwhile stays deleted
                await database_sync_to_async(conversation.save)(force_update=True)
            except DatabaseError:
                log.info("playground conversation %s was deleted while in use; not saved", conversation.pk)
                self.conversation = None

    @database_sync_to_async
    def load_conversation(self, conversation_id: Any, prompt: str) -> Conversation:
        if conversation_id is None:
            title = " ".join(prompt.split())[:60] or "Images"
            return Conversation(user=self.user, title=title, panes=[])
        if not isinstance(conversation_id, int):
            raise ProtocolError("'conversation' must be a conversation id or null.")
        conversation = Conversation.objects.filter(pk=conversation_id, user=self.user).first()
        if conversation is None:
            raise ProtocolError(f"Conversation {conversation_id} does not exist.")
        return conversation

    @database_sync_to_async
    def load_images(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        found = {str(image.id): image for image in PlaygroundImage.objects.filter(pk__in=ids, user=self.user)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ProtocolError("An attached image is no longer available; attach it again.")
        return [{"id": i, "data_url": found[i].data_url, "report": found[i].report} for i in ids]


def validate_send(content: dict) -> tuple[str, list[str], list[dict]]:
    """The prompt, image ids and pane specs of a ``send`` message, or a ProtocolError naming the problem."""
    prompt = content.get("prompt")
    if not isinstance(prompt, str):
        raise ProtocolError("'prompt' must be a string.")
    images = content.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ProtocolError("'images' must be a list of upload ids.")
    if len(images) > MAX_IMAGES:
        raise ProtocolError(f"At most {MAX_IMAGES} images per message.")
    import uuid

    try:
        images = [str(uuid.UUID(i)) for i in images]
    except ValueError:
        raise ProtocolError("'images' holds something that is not an upload id.") from None
    if not prompt.strip() and not images:
        raise ProtocolError("Write a prompt (or attach an image) first.")
    return prompt, images, validate_panes(content.get("panes"))


def validate_panes(panes: Any, allow_empty: bool = False) -> list[dict]:
    """The pane specs of a ``send`` or ``layout`` message, their parameters in one canonical shape."""
    if not isinstance(panes, list) or not (panes or allow_empty):
        raise ProtocolError("'panes' must be a non-empty list.")
    if len(panes) > MAX_PANES:
        raise ProtocolError(f"At most {MAX_PANES} panes.")
    out, seen = [], set()
    for i, pane in enumerate(panes):
        if not isinstance(pane, dict):
            raise ProtocolError(f"panes[{i}] must be an object.")
        index, endpoint = pane.get("pane"), pane.get("endpoint")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 32 or index in seen:
            raise ProtocolError(f"panes[{i}].pane must be a distinct pane number.")
        if not isinstance(endpoint, str) or not endpoint:
            raise ProtocolError(f"panes[{i}].endpoint must name an endpoint.")
        system = pane.get("system") or ""
        params = pane.get("params") or {}
        if not isinstance(system, str) or not isinstance(params, dict):
            raise ProtocolError(f"panes[{i}]: 'system' must be a string and 'params' an object.")
        seen.add(index)
        out.append({"pane": index, "endpoint": endpoint, "system": system, "params": clean_params(params, f"panes[{i}]")})
    return out


PARAM_NUMBERS = ("temperature", "max_tokens", "top_p", "budget_tokens")


def clean_params(params: dict, where: str) -> dict:
    """A pane's parameters as kept and sent: numbers or None, ``stop`` a list of strings, ``thinking`` a bool.

    ``stop`` may come as one string, one sequence per line (older pages); it is kept as the list
    it stands for, so it shows and sends the same after any number of reopenings.
    """
    unknown = sorted(set(params) - {*PARAM_NUMBERS, "stop", "thinking"})
    if unknown:
        raise ProtocolError(f"{where}.params: unknown parameter '{unknown[0]}'.")
    out: dict[str, Any] = {}
    for name in PARAM_NUMBERS:
        value = params.get(name)
        if value == "":
            value = None
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
                                  or value in (float("inf"), float("-inf"))):
            raise ProtocolError(f"{where}.params.{name} must be a number or null.")
        out[name] = value
    stop = params.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [s for s in stop.split("\n") if s]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ProtocolError(f"{where}.params.stop must be a list of strings.")
    out["stop"] = [s for s in stop if s]
    thinking = params.get("thinking", False)
    if not isinstance(thinking, bool):
        raise ProtocolError(f"{where}.params.thinking must be true or false.")
    out["thinking"] = thinking
    return out


def apply_layout(conversation: Conversation, panes: list[dict]) -> None:
    """Make the conversation's panes those of ``panes`` (endpoint, system prompt, parameters); the
    others are kept, with their threads, but marked removed (a pane's number names its thread)."""
    shown = {spec["pane"]: spec for spec in panes}
    while len(conversation.panes) <= max(shown, default=-1):
        conversation.panes.append({"endpoint": "", "system": "", "params": {}, "messages": [], "turns": [], "removed": True})
    for index, pane in enumerate(conversation.panes):
        spec = shown.get(index)
        if spec is None:
            pane["removed"] = True
        else:
            pane.update(endpoint=spec["endpoint"], system=spec["system"], params=spec["params"], removed=False)


def sent_settings(endpoint: str, body: dict) -> dict:
    """What a turn was sent with, read from the request body itself (so it cannot differ from it)."""
    thinking = body.get("thinking")
    stop = body.get("stop") or []
    return {"endpoint": endpoint, "temperature": body.get("temperature"), "max_tokens": body.get("max_tokens"),
            "top_p": body.get("top_p"), "stop": stop, "stop_json": json.dumps(stop, ensure_ascii=False),
            "thinking": bool(thinking), "budget_tokens": thinking["budget_tokens"] if thinking else None}


def can_see_images(endpoint: Any) -> bool:
    if endpoint is None or endpoint.task != CHAT or not endpoint.entities:
        return False
    try:
        return get_provider(endpoint.entities[0]).sees_images
    except ServingError:
        return False


def user_content(prompt: str, images: list[dict]) -> Any:
    if not images:
        return prompt
    return [{"type": "text", "text": prompt}] + [{"type": "image_url", "image_url": {"url": image["data_url"]}} for image in images]


def assistant_message(reasoning: str, signature: str | None, text: str) -> dict:
    """The answer as the API returns it: reasoning kept as a signed block so it verifies when sent back.

    Reasoning without a signature (stopped mid-thought, or a vendor that signs nothing) is dropped
    from the thread: the spec allows dropping earlier reasoning, and an unsigned block is a 400.
    """
    if reasoning and signature:
        return {"role": "assistant", "content": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": reasoning, "signature": signature}]},
            {"type": "text", "text": text},
        ]}
    return {"role": "assistant", "content": text}


def request_body(pane: dict, user_message: dict) -> dict:
    """The OpenAI chat request for one pane: its system prompt, its own thread, the new prompt, its parameters."""
    messages = ([{"role": "system", "content": pane["system"]}] if pane["system"].strip() else [])
    body: dict[str, Any] = {"messages": messages + pane["messages"] + [user_message],
                            "stream": True, "stream_options": {"include_usage": True}}
    params = pane["params"]
    for name in ("temperature", "max_tokens", "top_p"):
        value = params.get(name)
        if value not in (None, ""):
            body[name] = value
    stop = params.get("stop")
    if isinstance(stop, str):
        stop = [s for s in stop.split("\n") if s]
    if stop:
        body["stop"] = stop
    if params.get("thinking"):
        budget = params.get("budget_tokens")
        body["thinking"] = {"type": "enabled", "budget_tokens": budget if budget not in (None, "") else 64}
    return body


def figures(started: float, first_token: float | None, first_text: float | None, reasoning_started: float | None,
            ended: float, usage: Usage | None, deltas: int) -> dict:
    """Time to first token, tokens per second, token counts and latency of one answer."""
    out: dict[str, Any] = {"latency_s": round(ended - started, 2)}
    if first_token is not None:
        out["ttft_ms"] = round((first_token - started) * 1000)
    if reasoning_started is not None:
        out["reasoning_s"] = round((first_text or ended) - reasoning_started, 1)
    if usage is not None:
        out.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   reasoning_tokens=usage.reasoning_tokens)
    generated = usage.completion_tokens if usage is not None else deltas
    if first_token is not None and ended > first_token and generated:
        out["tokens_per_s"] = round(generated / (ended - first_token), 1)
    return out


# --- closing the sockets of a session that signed out -------------------------------------------


def session_group(session_key: str) -> str:
    # Group names are short ASCII; the session key itself is not kept in the channel layer.
    return "playground.session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def user_group(user_id: Any) -> str:
    return f"playground.user.{user_id}"


def close_sockets(group: str) -> None:
    """Tell every playground socket in ``group`` to close (from sync code: a signal receiver)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "playground.signed_out"}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    try:
        if loop is not None:  # called on the event loop's own thread
            loop.create_task(layer.group_send(group, message))
        else:
            async_to_sync(layer.group_send)(group, message)
    except Exception:  # noqa: BLE001 - signing out must not fail because a socket could not be told
        log.exception("could not close the playground sockets of %s", group)


@receiver(user_logged_out, dispatch_uid="playground-close-sockets-on-logout")
def _signed_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        close_sockets(session_group(session.session_key))


@receiver(post_delete, sender=Session, dispatch_uid="playground-close-sockets-on-session-delete")
def _session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    close_sockets(session_group(instance.session_key))


@receiver(post_save, sender=get_user_model(), dispatch_uid="playground-close-sockets-on-deactivate")
def _user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        close_sockets(user_group(instance.pk))


@receiver(post_delete, sender=get_user_model(), dispatch_uid="playground-close-sockets-on-user-delete")
def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    close_sockets(user_group(instance.pk))
