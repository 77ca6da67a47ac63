"""``edge-agent eval``: the anomaly model measured on labelled clips, beside baselines.

Every score is made by the agent's own classes (:class:`agent.stream.ModelStream`,
:class:`agent.scoring.CellScorer`, the :class:`agent.detector.Detector`'s smoothing), so a change
to how the agent scores frames is what the evaluation measures, with nothing to keep in step.
"""
