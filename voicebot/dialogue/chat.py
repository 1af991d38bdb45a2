"""``voicebot chat``: the bot by text, in the terminal (same dialogue as on the phone).

One key typed alone (0-9, * or #) is a keypad press, as on the phone.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from voicebot.core.config import Settings
from voicebot.core.interfaces import BotReply
from voicebot.dialogue.agent import RasaDialogue

KEYS = set("0123456789*#")


def _print_reply(reply: BotReply) -> None:
    for text in reply.texts:
        print(f"Robot : {text}")
    if reply.handoff is not None:
        print("--- Transfert vers un conseiller ---")
        print(json.dumps({"handoff": reply.handoff.as_dict()}, ensure_ascii=False))


def chat_once(settings: Settings, text: str) -> int:
    """One turn: prints the reply and, if any, the handoff signal as JSON."""
    dialogue = RasaDialogue.load(settings)
    call_id = f"chat-{uuid.uuid4().hex[:8]}"

    async def one_turn() -> BotReply:
        try:
            return await dialogue.turn(call_id, text)
        finally:
            await dialogue.end(call_id)

    reply = asyncio.run(one_turn())
    for line in reply.texts:
        print(line)
    if reply.handoff is not None:
        print(json.dumps({"handoff": reply.handoff.as_dict()}, ensure_ascii=False))
    return 0


def chat_interactive(settings: Settings) -> int:
    """A conversation in the terminal; ends on goodbye, handoff, end of input or Ctrl-C."""
    print("Chargement du modèle…")
    dialogue = RasaDialogue.load(settings)
    call_id = f"chat-{uuid.uuid4().hex[:8]}"
    loop = asyncio.new_event_loop()
    print("Tapez votre message (une touche seule, 0 à 9, * ou #, comme sur le téléphone).")
    print("Fin : Ctrl-D ou Ctrl-C.\n")
    try:
        _print_reply(loop.run_until_complete(dialogue.greet(call_id)))
        while True:
            try:
                line = input("Vous : ").strip()
            except EOFError:
                print()
                break
            if not line:
                continue
            if line in KEYS:
                reply = loop.run_until_complete(dialogue.dtmf(call_id, line))
            else:
                reply = loop.run_until_complete(dialogue.turn(call_id, line))
            _print_reply(reply)
            if reply.handoff is not None or reply.end_call:
                break
    except KeyboardInterrupt:
        print()
    finally:
        loop.run_until_complete(dialogue.end(call_id))
        loop.close()
    print("(fin de la conversation)")
    return 0
