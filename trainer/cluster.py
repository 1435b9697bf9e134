"""The cluster of ``--strategy=multi_worker``, read from ``TF_CONFIG`` without
TensorFlow: which task this process is, and whether it is the chief (the one
that writes the run's files)."""

from __future__ import annotations

import json
import os

from trainer.config import Config
from trainer.errors import UsageError


def is_chief_task(cluster: dict, task_type: str | None, task_id: int | None) -> bool:
    """The chief writes the run's files: the ``chief`` task when the cluster has
    one, otherwise worker 0. A process outside any cluster is its own chief."""
    if not task_type:
        return True
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and int(task_id or 0) == 0


def tf_config_task(config: Config) -> tuple[dict, str | None, int | None]:
    """``(cluster, task type, task id)`` from ``TF_CONFIG`` under ``--strategy=multi_worker``.

    Read without TensorFlow, so the chief is known before the strategy exists
    (only the chief takes the run folder's lock). Other strategies: ``({}, None, None)``.
    """
    if config.strategy != "multi_worker":
        return {}, None, None
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        raise UsageError("--strategy=multi_worker: set TF_CONFIG to describe the cluster")
    try:
        tf_config = json.loads(text)
        cluster = tf_config.get("cluster") or {}
        task = tf_config.get("task") or {}
        task_type = task.get("type")
        task_id = int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as error:
        raise UsageError(f"--strategy=multi_worker: bad TF_CONFIG ({error})") from None
    if not isinstance(cluster, dict) or (task_type and task_type not in cluster):
        raise UsageError(
            f"--strategy=multi_worker: bad TF_CONFIG (task type {task_type!r} is not in "
            f"its cluster {sorted(cluster) if isinstance(cluster, dict) else cluster!r})"
        )
    return cluster, task_type, task_id
