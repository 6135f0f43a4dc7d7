"""Kubernetes quantities (CPU and memory) as numbers, and back as people read them.

Plain Python (the kubernetes client's own parser), so every layer may use it.
"""

from __future__ import annotations

import math
from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity


def cpu_to_millicores(quantity: str) -> int:
    return math.ceil(parse_quantity(quantity) * 1000)


def memory_to_bytes(quantity: str) -> int:
    return math.ceil(parse_quantity(quantity))


def format_cpu(millicores: int) -> str:
    return f"{millicores / 1000:g}"


def format_memory(num_bytes: int) -> str:
    gib = Decimal(num_bytes) / (1024**3)
    if gib >= 1:
        return f"{gib.quantize(Decimal('0.01')).normalize():f} GiB"
    return f"{(Decimal(num_bytes) / 1024**2).quantize(Decimal('1'))} MiB"
