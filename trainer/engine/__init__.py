"""The compiled training engine, one concept per module.

``trainer.Trainer`` runs training steps in compiled calls (``step``: the
replica step; ``guard``: the NaN/Inf guard; ``loops``: the compiled loops;
``speculation``: the guard paid once per call; ``diagnostics``: diagnostic
steps; ``objective``, ``metrics``), ``evaluator.Evaluator`` evaluates, and
``fit.fit`` is the Keras-like convenience over both. The outer loop is
``trainer.controller``.
"""
