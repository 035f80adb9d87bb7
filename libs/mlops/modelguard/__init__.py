"""Model artifacts are code: inspect a TorchScript artifact before anything of it runs, and refuse any op
outside an allowlist of pure tensor operations (see docs/security.md, "Model artifacts are code").

- :mod:`~mlops.modelguard.ops`: the allowlist, as data (``MLOPS_MODEL_OPS_ALLOW`` adds ops);
- :mod:`~mlops.modelguard.archive`: static checks of the archive's bytes (no torch, nothing loaded);
- :mod:`~mlops.modelguard.graphs`: every graph of a loaded module, inlined, walked op by op;
- :mod:`~mlops.modelguard.worker`: the subprocess that loads and walks an archive for a verdict;
- :mod:`~mlops.modelguard.policy`: :class:`ModelPolicy`, what services call.
"""

from mlops.modelguard.policy import ModelPolicy, default_policy
from mlops.modelguard.refusal import ArtifactRefused, ArtifactUnreadable, Finding

__all__ = ["ArtifactRefused", "ArtifactUnreadable", "Finding", "ModelPolicy", "default_policy"]
