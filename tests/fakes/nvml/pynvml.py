"""A FAKE of nvidia-ml-py's `pynvml` for tests on machines without an NVIDIA GPU (named as a
fake; put tests/fakes/nvml first on PYTHONPATH). Two GPUs with known, constant readings:

    GPU 0: 300 W, 75 % utilisation, energy counter = 300 W x seconds since nvmlInit (mJ)
    GPU 1: 100 W, 25 % utilisation, no energy counter (NVML_ERROR_NOT_SUPPORTED, as on
           pre-Volta GPUs): the summary must integrate its power instead

Only the calls aifb.telemetry.sources.NvmlSource makes exist here.
"""

import time
from types import SimpleNamespace

NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0
POWER_W = (300.0, 100.0)
UTIL = (75, 25)
_t0 = None


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def nvmlInit():
    global _t0
    _t0 = time.monotonic()


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return len(POWER_W)


def nvmlDeviceGetHandleByIndex(i):
    return i


def nvmlDeviceGetUtilizationRates(h):
    return SimpleNamespace(gpu=UTIL[h], memory=10)


def nvmlDeviceGetMemoryInfo(h):
    return SimpleNamespace(used=8 << 30, total=80 << 30, free=72 << 30)


def nvmlDeviceGetPowerUsage(h):
    return int(POWER_W[h] * 1000)          # milliwatts


def nvmlDeviceGetTotalEnergyConsumption(h):
    if h == 1:
        raise NVMLError_NotSupported("Not Supported")
    return int(POWER_W[h] * (time.monotonic() - _t0) * 1000)   # millijoules


def nvmlDeviceGetClockInfo(h, clock):
    return 1980


def nvmlDeviceGetTemperature(h, sensor):
    return 45
