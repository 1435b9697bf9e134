"""Counts the ops one compiled training step runs: the graph nodes of
``Trainer.train_loop``'s while-loop body, with the NaN/Inf guard and
without it (``check_finite=False``; the same step as the speculative calls
that in-memory data runs, whose guard is paid once per call), and of the
diagnostic loop's body.

    python scripts/step_ops.py --preset=mlp

Fewer ops matter on small steps, where per-op overhead is a large share.
Nothing is trained.
"""

from __future__ import annotations

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark

from trainer.data import pipeline

FLAGS = flags.FLAGS


def body_ops(function, *args) -> collections.Counter:
    """Op types of the while-loop body in ``function``'s traced graph."""
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    library = {f.signature.name: f for f in graph.library.function}
    [loop] = [node for node in graph.node if node.op in ("While", "StatelessWhile")]
    body = library[loop.attr["body"].func.name]
    return collections.Counter(node.op for node in body.node_def)


def main(argv):
    from trainer import runtime

    tf = runtime.import_tensorflow()
    from models import optimizers
    from trainer.engine.trainer import Trainer

    network = benchmark.build_model(FLAGS.preset, 0)
    info = benchmark.model_summary(network)
    x, y = benchmark.synthetic_data(4 * FLAGS.batch_size, network.input_shape, info["classes"], 0)
    for label, settings in (
        ("step with the guard", {}),
        ("step without the guard", {"check_finite": False}),
        ("diagnostic step", {"diagnose_every": 100}),
    ):
        program = Trainer(
            benchmark.build_model(FLAGS.preset, 0),
            optimizers.get("sgd", 0.01),
            global_batch_size=FLAGS.batch_size,
            **settings,
        )
        iterator = iter(pipeline.train_dataset(x, y, FLAGS.batch_size, 0))
        loop = program.diagnostic_loop if "diagnose_every" in settings else program.train_loop
        ops = body_ops(loop, iterator, tf.constant(1))
        common = ", ".join(f"{op} {n}" for op, n in ops.most_common(8))
        print(f"{FLAGS.preset} {label}: {sum(ops.values())} ops ({common}, ...)")


if __name__ == "__main__":
    app.run(main)
