"""Stages: each takes a run and resolved settings, computes, and returns a record to store.
No stage calls another stage or draws a figure; `simulator.pipeline` orders them."""
