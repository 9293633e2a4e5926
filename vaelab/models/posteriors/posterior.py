"""What a posterior q(z_1|x) of the layer next to x is, and the registry of them.

A posterior part has a ``name`` (what ``posterior.name`` calls it) and a class method
``posterior(cfg, model, trunk)`` that builds q(z_1|x) on the encoder's trunk as a
:class:`~vaelab.models.posteriors.gaussian.GaussianLayer` (a flow's is a ``FlowPosterior``).
Its ``gaussian`` says whether q(z_1|x) is a diagonal Gaussian (a closed-form KL, an exact
mutual information). The layers above z_1 are always Gaussian. A new flow is one module of this
package or a file of your own (:class:`~vaelab.models.posteriors.flow.Flow`, docs/extending.md).
"""

from __future__ import annotations

from vaelab.registry import Registry

POSTERIORS: Registry[type] = Registry("posterior.name", "vaelab.models.posteriors", custom=True)
