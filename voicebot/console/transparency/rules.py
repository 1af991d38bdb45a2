"""The card's rules: when the bot answers, and each way a call leaves the bot, with the
thresholds in force."""

from __future__ import annotations

from voicebot.console.transparency.model import Rule
from voicebot.console.transparency.words import (
    NBSP,
    duration_fr,
    emergency_numbers_fr,
    milliseconds_fr,
    percent_fr,
    quote_fr,
    times_fr,
)
from voicebot.core.config import Settings
from voicebot.dialogue import catalogue
from voicebot.dialogue.knowledge import KnowledgeBase

TURN_SETTINGS = (
    "closed_answer_silence_ms",
    "complete_silence_ms",
    "complete_confidence",
    "fallen_silence_ms",
    "fall_semitones",
    "unfinished_silence_ms",
    "held_silence_ms",
    "held_semitones",
)


def turn_end_rule(settings: Settings) -> Rule:
    """When the bot takes the caller to have finished (voicebot.call.turn_end)."""
    turn = settings.turn
    default_wait = milliseconds_fr(settings.vad.end_silence_ms)
    in_force: tuple[str, ...] = (f"vad.end_silence_ms = {settings.vad.end_silence_ms}",)
    if turn.enabled:
        threshold = (
            f"{milliseconds_fr(turn.closed_answer_silence_ms)} de silence pour un « oui » "
            "ou un « non » à une question de l'assistant ; "
            f"{milliseconds_fr(turn.complete_silence_ms)} quand il comprend déjà votre "
            f"demande avec une certitude d'au moins {percent_fr(turn.complete_confidence)} "
            "(sauf si votre voix reste haute), "
            f"ou {milliseconds_fr(turn.fallen_silence_ms)} quand votre voix descend comme "
            f"en fin de phrase ; {milliseconds_fr(turn.unfinished_silence_ms)} quand la "
            "phrase reste en suspens sur un mot comme « de », « pour », « euh » ou « je "
            f"voudrais », {milliseconds_fr(turn.held_silence_ms)} quand votre voix reste "
            f"haute ; sinon {default_wait}"
        )
        in_force = (
            tuple(f"turn.{name} = {getattr(turn, name)}" for name in TURN_SETTINGS) + in_force
        )
    else:
        threshold = f"{default_wait} de silence"
        in_force = ("turn.enabled = False", *in_force)
    return Rule(
        "fin-de-tour",
        "Vous vous arrêtez de parler : l'assistant décide si vous avez fini, d'après les mots "
        "qu'il a reconnus et le ton de votre voix (jamais d'après qui vous êtes).",
        threshold,
        "il vous répond ; si vous reprenez la parole pendant sa réponse, il se tait et vous écoute",
        in_force,
    )


def gather_rules(
    settings: Settings,
    fallback: catalogue.FallbackThresholds,
    emergency_min_confidence: float,
    kb: KnowledgeBase,
) -> tuple[Rule, ...]:
    policy = settings.policy
    if fallback.threshold is not None:
        understood = (
            f"une phrase compte comme non comprise quand la certitude de compréhension est "
            f"inférieure à {percent_fr(fallback.threshold)}"
        )
        if fallback.ambiguity_threshold is not None:
            understood += (
                f", ou quand deux sujets possibles sont à moins de "
                f"{percent_fr(fallback.ambiguity_threshold)} l'un de l'autre"
            )
    else:
        understood = "une phrase compte comme non comprise sous le seuil par défaut de Rasa"
    where = "le modèle en service" if fallback.origin == "model" else "nlu/config.yml"
    nlu_settings: tuple[str, ...] = (
        f"policy.max_consecutive_fallbacks = {policy.max_consecutive_fallbacks}",
        f"FallbackClassifier.threshold = {fallback.threshold} ({where})",
    )
    if fallback.ambiguity_threshold is not None:
        nlu_settings += (
            f"FallbackClassifier.ambiguity_threshold = {fallback.ambiguity_threshold}",
        )
    if fallback.core_threshold is not None:
        nlu_settings += (f"RulePolicy.core_fallback_threshold = {fallback.core_threshold}",)

    silence_end = {
        "hangup": "l'assistant dit au revoir et raccroche",
        "transfer": "l'assistant vous passe un conseiller",
        "hangup_if_answered": (
            "si l'assistant vous a déjà répondu, il dit au revoir et raccroche ; sinon il "
            "vous passe un conseiller (une ligne silencieuse peut être une mauvaise ligne, "
            "ou une personne qui ne peut pas parler)"
        ),
    }[policy.silence_action]
    prompts = policy.silence_prompts_before_end
    low = policy.max_low_confidence_turns
    return (
        turn_end_rule(settings),
        Rule(
            "demande",
            "Vous demandez à parler à une personne (« conseiller », « un humain »…) ou "
            "vous tapez 0.",
            "immédiatement",
            "l'assistant vous passe un conseiller",
            (),
        ),
        Rule(
            "urgence",
            "Vous décrivez une urgence.",
            "des mots qui disent l'urgence (feu, malaise, accident…), ou une certitude "
            f"d'au moins {percent_fr(emergency_min_confidence)} que c'est une urgence",
            f"l'assistant donne {emergency_numbers_fr(kb.prompt('urgence'))}, puis vous passe "
            "un conseiller",
            (
                f"URGENCE_MIN_CONFIDENCE = {emergency_min_confidence} (voicebot/dialogue/actions.py)",
            ),
        ),
        Rule(
            "incomprehension",
            "L'assistant ne comprend pas votre demande.",
            f"{times_fr(policy.max_consecutive_fallbacks)} ; {understood}",
            "il vous demande d'abord de reformuler, puis vous passe un conseiller",
            nlu_settings,
        ),
        Rule(
            "confiance-asr",
            "La reconnaissance de la parole n'est pas sûre de ce que vous avez dit.",
            f"{times_fr(low)}, avec une certitude de reconnaissance inférieure à "
            f"{percent_fr(policy.min_asr_confidence)}",
            (
                "il vous demande de répéter, puis vous passe un conseiller"
                if low > 1
                else "il vous passe un conseiller"
            ),
            (
                f"policy.min_asr_confidence = {policy.min_asr_confidence}",
                f"policy.max_low_confidence_turns = {low}",
            ),
        ),
        Rule(
            "duree",
            "L'échange avec l'assistant dure trop longtemps.",
            f"{duration_fr(policy.max_call_seconds)} d'échange avec l'assistant",
            "il vous passe un conseiller",
            (f"policy.max_call_seconds = {policy.max_call_seconds}",),
        ),
        Rule(
            "silence",
            "Vous ne dites plus rien.",
            f"après {duration_fr(policy.silence_prompt_s)} de silence, l'assistant demande "
            f"{quote_fr(kb.prompt('silence_check'))}, {prompts}{NBSP}fois au plus ; puis, "
            f"après encore {duration_fr(policy.silence_prompt_s)} de silence",
            silence_end,
            (
                f"policy.silence_prompt_s = {policy.silence_prompt_s}",
                f"policy.silence_prompts_before_end = {prompts}",
                f"policy.silence_action = {policy.silence_action}",
            ),
        ),
        Rule(
            "erreur",
            "Un problème technique survient dans l'assistant pendant l'appel, ou le service "
            "est en train d'être arrêté.",
            "immédiatement",
            "l'assistant vous passe un conseiller",
            (),
        ),
        Rule(
            "injoignable",
            "L'assistant ne répond pas (arrêté ou en panne), ou ne peut pas transmettre sa "
            "décision au standard.",
            "immédiatement",
            "le standard téléphonique vous met directement dans la file des conseillers",
            (),
        ),
        Rule(
            "au-revoir",
            "L'assistant vous a répondu et vous dites au revoir.",
            "—",
            "l'assistant dit au revoir et raccroche ; l'appel compte alors comme résolu",
            (),
        ),
    )
