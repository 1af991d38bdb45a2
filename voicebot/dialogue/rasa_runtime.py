"""Rasa in this process: quiet logs, and its start-up cost apart from loading a model."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

log = logging.getLogger(__name__)


def quiet_rasa() -> None:
    """Rasa's structured logs print every debug line unless configured: keep warnings only.

    Rasa and its dependencies also emit deprecation warnings on import that mean nothing to
    an operator or a trainer: those are silenced too (other warnings still show).
    """
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(rasa|tensorflow|keras)")
    from rasa.utils.log_utils import configure_structlog

    root = logging.getLogger()
    level = root.level
    configure_structlog(logging.WARNING)
    root.setLevel(level)  # Rasa lowers the whole process to WARNING: keep the bot's own logs


def preload_rasa() -> None:
    """Import Rasa's agent (TensorFlow start-up: seconds), so that it can be timed apart
    from loading a model (scripts/bench_nlu.py)."""
    import rasa.core.agent  # noqa: F401


def install_fast_model_load() -> None:
    """Make Rasa load a trained TensorFlow model (DIET, TED) in a third of the time, with the
    same weights and the same predictions.

    Rasa's ``RasaModel.load`` builds the model by training it on one example, then loads the
    trained weights over it, then predicts once so that the prediction graph is built. Both
    steps trace Python into TensorFlow graphs through AutoGraph, whose source rewriting was
    ~7 of the ~8 s of `voicebot serve`'s dialogue load. Here the one-example training runs
    eagerly (its result is overwritten by the trained weights anyway, and no training graph
    is ever needed to answer), and the prediction graph is traced without AutoGraph: the
    prediction code branches only on Python values (its configuration), so the graph is the
    same; if a model's code ever branched on a tensor, the trace fails and the graph is built
    Rasa's way. Fine-tuning (incremental training) keeps Rasa's own load: it trains next.
    Idempotent; affects only this process."""
    from rasa.utils.tensorflow.models import RasaModel

    if getattr(RasaModel.load, "fast_load", False):
        return
    rasa_load = RasaModel.load.__func__  # type: ignore[attr-defined]

    def fast_load(
        cls: type[RasaModel],
        model_file_name: str,
        model_data_example: Any,
        predict_data_example: Any = None,
        finetune_mode: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> RasaModel:
        if finetune_mode:
            return rasa_load(  # type: ignore[no-any-return]
                cls,
                model_file_name,
                model_data_example,
                predict_data_example,
                True,
                *args,
                **kwargs,
            )
        import tensorflow as tf
        from rasa.utils.tensorflow.data_generator import RasaBatchDataGenerator

        config = kwargs.get("config", {})
        model = cls(*args, **kwargs)
        # the one-example training only creates the variables: eager, no graph traced
        model.compile(
            optimizer=tf.keras.optimizers.Adam(config.get("learning_rate", 0.001)),
            run_eagerly=True,
        )
        model.fit(RasaBatchDataGenerator(model_data_example, batch_size=1), verbose=False)
        model.run_eagerly = config.get("run_eagerly")
        model.train_function = None  # the eager one: never reused
        model.load_weights(model_file_name)
        if predict_data_example:
            _trace_prediction(model, predict_data_example)
        return model

    fast_load.fast_load = True  # type: ignore[attr-defined]
    fast_load.rasa_load = rasa_load  # type: ignore[attr-defined]  # for the test comparing both
    RasaModel.load = classmethod(fast_load)  # type: ignore[method-assign,assignment]


def _trace_prediction(model: Any, predict_data_example: Any) -> None:
    """Build ``model``'s prediction graph once, without AutoGraph when it can (see
    ``install_fast_model_load``), by predicting on one example as Rasa does."""
    import tensorflow as tf
    from rasa.utils.train_utils import create_data_generators

    generator, _ = create_data_generators(
        model_data=predict_data_example, batch_sizes=1, epochs=1, shuffle=False
    )
    batch_in = next(iter(generator))[0]
    model._tf_predict_step = tf.function(
        model.predict_step, input_signature=model._dynamic_signature(batch_in), autograph=False
    )
    try:
        model.run_inference(predict_data_example)
    except Exception:  # this model's prediction branches on a tensor: Rasa's way, AutoGraph
        log.info("Rasa model: prediction graph traced with AutoGraph", exc_info=True)
        model._tf_predict_step = None
        model.run_inference(predict_data_example)


def install_fast_event_lookup() -> None:
    """Make Rasa find an event's class by its name without walking every Event subclass.

    Rasa's ``Event.resolve_by_type`` lists all the subclasses of ``Event`` (recursively, with
    ``inspect.isabstract`` on each) for every event it deserialises, and the in-memory tracker
    store deserialises the call's whole tracker at every turn: that walk was ~9 % of a turn's
    CPU (py-spy, `python -m voicebot.tools.dialogue_speed`), all of it holding the GIL that
    the calls' audio loop needs. Here a name is looked up in a table made by the same walk,
    first match kept as Rasa's loop keeps it (event names are unique in Rasa); a name not in
    the table (an event class defined since) remakes it once, and a name no class has goes
    Rasa's way (``topic`` → None, the default, or ValueError). Idempotent; affects only this
    process."""
    from rasa.shared.core.events import Event
    from rasa.shared.utils.common import all_subclasses

    if getattr(Event.resolve_by_type, "fast_lookup", False):
        return
    rasa_resolve = Event.resolve_by_type
    # Replaced whole, never changed: Rasa's loop thread and a loading thread may read it at once.
    table: dict[str, type[Event]] = {}

    def fast_resolve(type_name: str, default: type[Event] | None = None) -> type[Event] | None:
        nonlocal table
        found = table.get(type_name)
        if found is None:
            fresh: dict[str, type[Event]] = {}
            for cls in all_subclasses(Event):
                fresh.setdefault(cls.type_name, cls)
            table = fresh
            found = fresh.get(type_name)
        if found is not None:
            return found
        return rasa_resolve(type_name, default)  # type: ignore[no-any-return]

    fast_resolve.fast_lookup = True  # type: ignore[attr-defined]
    fast_resolve.rasa_resolve = rasa_resolve  # type: ignore[attr-defined]  # for the test
    Event.resolve_by_type = staticmethod(fast_resolve)  # type: ignore[method-assign,assignment]
