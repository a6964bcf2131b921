"""Training one model: the Hydra task, the network, two-phase fitting and its parts (schedules, class weights,
optimisers), hardware and provenance."""
