"""The schedulers a user can pick, built from the model's own scheduler config (its training schedule)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerChoice:
    class_name: str
    overrides: dict = field(default_factory=dict)


SCHEDULERS = {
    "ddim": SchedulerChoice("DDIMScheduler"),
    "dpmpp_2m": SchedulerChoice("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": SchedulerChoice(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}
    ),
    "euler": SchedulerChoice("EulerDiscreteScheduler"),
    "euler_ancestral": SchedulerChoice("EulerAncestralDiscreteScheduler"),
    "unipc": SchedulerChoice("UniPCMultistepScheduler"),
    "ddpm": SchedulerChoice("DDPMScheduler"),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)


def make_scheduler(name: str, scheduler_config: dict):
    """A fresh diffusers scheduler of kind `name` with the model's training schedule."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler '{name}' is unknown: choose one of {', '.join(SCHEDULER_NAMES)}")
    import diffusers

    choice = SCHEDULERS[name]
    return getattr(diffusers, choice.class_name).from_config(scheduler_config, **choice.overrides)
