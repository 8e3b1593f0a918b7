"""Evaluation: metrics, alignment (Procrustes, ICP with scale), benchmark protocols and reports.

Protocols: the synthetic benchmark (`synthetic`), MICC Florence (`micc`), NoW (`now`) and
AFLW2000-3D (`aflw2000`); each has a `run_*` function that writes a report folder, and the
`msma-jax evaluate` subcommand calls them.
"""
from msma_jax.evaluation.alignment import IcpResult, Similarity, fit_similarity, icp
from msma_jax.evaluation.metrics import (aligned_vertex_errors, bbox_size, cumulative_error,
                                         landmark_nme, point_to_plane_distances,
                                         point_to_point_distances, point_to_surface_distances,
                                         summarize, vertex_rmse)
from msma_jax.evaluation.predictors import (MeanFacePredictor, OraclePredictor, Predictor,
                                            PredictorError, register_predictor, resolve_predictor)
from msma_jax.evaluation.report import Report

__all__ = [
    "IcpResult", "MeanFacePredictor", "OraclePredictor", "Predictor", "PredictorError", "Report",
    "Similarity", "aligned_vertex_errors", "bbox_size", "cumulative_error", "fit_similarity", "icp",
    "landmark_nme", "point_to_plane_distances", "point_to_point_distances",
    "point_to_surface_distances", "register_predictor", "resolve_predictor", "summarize",
    "vertex_rmse",
]
