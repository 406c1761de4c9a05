"""Actuators: what a decision does to the microscope (issue 16; ``docs/actuators.md``).

:class:`Actuator` is the plug-in base (one class, a half in the interpreter process that
decides and a half in the camera process that applies); the built-in ones are ``interval``,
``roi``, ``channel`` and ``stimulate`` (:mod:`rt_eda.actuators._builtin`); modules of your
own are found through ``actuation.actuator_modules`` and listed by ``rt-eda actuators``.
"""

from rt_eda.core.messages import Action, DecisionRecord
from rt_eda.core.regions import EventRegion, FrameRegion

from ._base import Actuator, ActuatorSettings, require
from ._builtin import ChannelActuator, IntervalActuator, RoiActuator, StimulateActuator
from ._discovery import (
    BUILTIN_ACTUATOR_MODULES,
    describe_actuators,
    discover_actuators,
    make_actuators,
)

__all__ = [
    "BUILTIN_ACTUATOR_MODULES",
    "Action",
    "Actuator",
    "ActuatorSettings",
    "ChannelActuator",
    "DecisionRecord",
    "EventRegion",
    "FrameRegion",
    "IntervalActuator",
    "RoiActuator",
    "StimulateActuator",
    "describe_actuators",
    "discover_actuators",
    "make_actuators",
    "require",
]
