"""The ``voicebot`` command.

Parsing stays here; each subcommand calls one function of the module that owns the work,
passing the validated ``Settings`` and plain values (never the argparse namespace).
Heavy modules (Rasa, TensorFlow, engines) are imported only by the subcommand that needs
them, so ``voicebot --help`` stays instant.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from voicebot.core.config import Settings, load_settings
from voicebot.core.errors import VoicebotError
from voicebot.core.logs import quiet_warnings, setup_logging

# Quiet, private defaults even when the command is run outside the Makefile.
os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

Handler = Callable[[Settings, argparse.Namespace], int]


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.dialogue.training import train

    train(settings, if_needed=args.if_needed)
    return 0


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.dialogue.evaluate_command import evaluate_command

    return evaluate_command(
        settings,
        model=Path(args.model) if args.model else None,
        compare=Path(args.compare) if args.compare else None,
        out_dir=Path(args.out) if args.out else None,
        as_json=args.json,
    )


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.dialogue.chat import chat_interactive, chat_once

    if args.text is not None:
        return chat_once(settings, args.text)
    return chat_interactive(settings)


def _nlu_parse(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.dialogue.nlu_parse import parse_file, parse_texts

    if args.file is not None:
        return parse_file(settings, Path(args.file), as_json=args.json)
    if not args.text:
        raise VoicebotError("give a sentence to parse, or --file FILE")
    return parse_texts(settings, [" ".join(args.text)], as_json=args.json)


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.speech import models

    if args.models_command == "list":
        return models.list_models(settings)
    if args.models_command == "pull":
        return models.pull(settings, args.name, base_url=args.base_url)
    return models.verify(settings)


def _call(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.tools.simulate import simulate_call

    return simulate_call(
        settings,
        Path(args.wav),
        Path(args.out),
        as_json=args.json,
        realtime=args.realtime,
        texts=args.say or [],
        after_greeting=not args.from_start,
    )


def _talk(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.tools.talk import talk

    return talk(settings, input_device=args.input_device, output_device=args.output_device)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.app import serve

    return serve(settings, with_web=not args.no_web)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.app import serve

    return serve(settings, with_web=True, banner=True)


def _asr_eval(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.tools.asr_eval import evaluate

    return evaluate(
        settings,
        engine=args.engine,
        corpus=Path(args.corpus) if args.corpus else None,
        limit=args.limit,
        as_json=args.json,
    )


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.tools.bench.cli import run_bench

    return run_bench(
        settings,
        calls=args.calls,
        duration_s=args.duration,
        ramp_s=args.ramp,
        transport=args.transport,
        find_capacity=args.find_capacity,
        target=args.target,
        out_dir=Path(args.out) if args.out else None,
        as_json=args.json,
        noise_dbfs=args.line_noise,
        reload_at_s=args.reload_at,
    )


def _transparence(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.console.transparency import write_card_command

    return write_card_command(settings, Path(args.out))


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from voicebot.console.dashboard import report_command

    return report_command(
        settings,
        args.date_from,
        args.date_to,
        out_dir=Path(args.out) if args.out else None,
        as_json=args.json,
    )


def _day(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _records(settings: Settings, args: argparse.Namespace) -> int:
    if args.records_command == "export":
        from voicebot.records.rights_commands import export_command

        return export_command(settings, args.caller)
    if args.records_command == "delete":
        from voicebot.records.rights_commands import delete_command

        return delete_command(settings, args.caller, yes=args.yes)
    from voicebot.records.store import purge_command

    return purge_command(settings, older_than=args.older_than)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicebot", description="AlloNantes offline French telephony voicebot."
    )
    parser.add_argument("--config", help="settings file (YAML); default: embedded defaults")
    parser.add_argument("--log-level", default=os.environ.get("VOICEBOT_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train the Rasa model from nlu/")
    p.add_argument("--if-needed", action="store_true", help="only if nlu/ changed since last train")
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "evaluate", help="the model's accuracy on nlu/tests, clean and noisy: HTML, PNG, JSON"
    )
    p.add_argument("--model", help="a model archive (default: the current model)")
    p.add_argument("--compare", metavar="PATH", help="a second model, side by side")
    p.add_argument("--out", help="folder for the report (default: DATA_DIR/evaluations/DATE)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("chat", help="talk to the bot in French, by text")
    p.add_argument("--text", help="one turn: print the reply and any handoff signal, then exit")
    p.set_defaults(handler=_chat)

    nlu = sub.add_parser("nlu", help="natural-language understanding tools")
    nlu_sub = nlu.add_subparsers(dest="nlu_command", required=True, metavar="COMMAND")
    p = nlu_sub.add_parser("parse", help="intent and entities of sentences")
    p.add_argument("text", nargs="*", help="a sentence")
    p.add_argument("--file", help="one utterance per line ('-' for standard input)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_nlu_parse)

    models_parser = sub.add_parser("models", help="list, download and verify speech models")
    models_sub = models_parser.add_subparsers(
        dest="models_command", required=True, metavar="COMMAND"
    )
    models_sub.add_parser("list", help="installed and available models").set_defaults(
        handler=_models
    )
    p = models_sub.add_parser("pull", help="download a model (checksum verified)")
    p.add_argument("name")
    p.add_argument("--base-url", help="mirror to download from instead of the publisher")
    p.set_defaults(handler=_models)
    models_sub.add_parser("verify", help="check installed models").set_defaults(handler=_models)

    p = sub.add_parser("call", help="simulate a whole call on a WAV file of caller audio")
    p.add_argument("--wav", required=True, help="caller audio (any WAV; converted)")
    p.add_argument("--out", required=True, help="where to write the bot side (8 kHz WAV)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--realtime", action="store_true", help="pace the caller audio in real time")
    p.add_argument(
        "--from-start",
        action="store_true",
        help="play the caller audio from the first frame (over the greeting) instead of after it",
    )
    p.add_argument("--say", action="append", help="a typed caller turn, after the audio")
    p.set_defaults(handler=_call)

    p = sub.add_parser("talk", help="talk to the bot with the microphone and speaker")
    p.add_argument("--input-device", type=int, default=None)
    p.add_argument("--output-device", type=int, default=None)
    p.set_defaults(handler=_talk)

    p = sub.add_parser("serve", help="the phone server (AudioSocket, WebSocket media, console)")
    p.add_argument("--no-web", action="store_true", help="no console/softphone web server")
    p.set_defaults(handler=_serve)

    p = sub.add_parser("run", help="everything `make run` starts")
    p.set_defaults(handler=_run)

    asr = sub.add_parser("asr", help="speech-recognition tools")
    asr_sub = asr.add_subparsers(dest="asr_command", required=True, metavar="COMMAND")
    p = asr_sub.add_parser("eval", help="word error rate and real-time factor on a corpus")
    p.add_argument("--engine", choices=["vosk", "whisper"], default=None)
    p.add_argument("--corpus", help="a folder of WAV files with a transcripts file")
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_asr_eval)

    p = sub.add_parser("bench", help="latency and capacity benchmark over emulated calls")
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--ramp", type=float, default=2.0, help="seconds between call starts")
    p.add_argument(
        "--transport",
        choices=["audiosocket", "websocket", "websocket-slin"],
        default="audiosocket",
        help="websocket: chan_websocket in slin16; websocket-slin: in slin (8 kHz)",
    )
    p.add_argument("--find-capacity", action="store_true")
    p.add_argument(
        "--target",
        action="append",
        metavar="HOST:PORT",
        help="a running server's AudioSocket (or WebSocket, per --transport) port; repeat "
        "--target for several servers: call i goes to target i mod T (default: start one)",
    )
    p.add_argument("--out", help="folder for the markdown report and plots")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--line-noise",
        type=float,
        default=-65.0,
        metavar="DBFS",
        help="white noise under the callers' audio, as on a real line (default -65; "
        "--line-noise=-inf for digital silence)",
    )
    p.add_argument(
        "--reload-at",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send SIGHUP to the server this far into the run (a live swap of the dialogue) "
        "and report the audio pacing during the reload beside the whole run's",
    )
    p.set_defaults(handler=_bench)

    p = sub.add_parser(
        "transparence", help="the public algorithm card, as HTML and PDF (also /transparence)"
    )
    p.add_argument("--out", required=True, help="folder for transparence.html and .pdf")
    p.set_defaults(handler=_transparence)

    records = sub.add_parser("records", help="call records")
    records_sub = records.add_subparsers(dest="records_command", required=True, metavar="COMMAND")
    p = records_sub.add_parser("purge", help="delete records older than a duration (e.g. 30d)")
    p.add_argument("--older-than", default=None, help="e.g. 30d, 12h (default: the retention)")
    p.set_defaults(handler=_records)
    p = records_sub.add_parser(
        "export", help="every call kept for a phone number, with its transcript, as JSON"
    )
    p.add_argument("--caller", required=True, metavar="NUMBER", help="the caller's number")
    p.set_defaults(handler=_records)
    p = records_sub.add_parser("delete", help="erase every call kept for a phone number")
    p.add_argument("--caller", required=True, metavar="NUMBER", help="the caller's number")
    p.add_argument("--yes", action="store_true", help="no confirmation question")
    p.set_defaults(handler=_records)

    p = sub.add_parser(
        "report", help="the ROI report of a period: HTML, PNG charts and JSON (also on the console)"
    )
    p.add_argument("--from", dest="date_from", required=True, type=_day, metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", required=True, type=_day, metavar="YYYY-MM-DD")
    p.add_argument("--out", help="folder for the report (default: DATA_DIR/rapports/FROM_TO)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level.upper())
    quiet_warnings()
    try:
        settings = load_settings(Path(args.config) if args.config else None)
        handler: Handler = args.handler
        return handler(settings, args)
    except VoicebotError as exc:
        print(f"voicebot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
