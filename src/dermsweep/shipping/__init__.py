"""Shipping the winner: model references, ranking and promotion, the serving model, export, predict."""
