"""trainer_callback_gradnorm: a gradient-norm monitor for the pytorch_accelerated Trainer.

from trainer_callback_gradnorm import GradientNormMonitorCallback

trainer = Trainer(model, loss_func, optimizer, callbacks=(*DEFAULT_CALLBACKS, GradientNormMonitorCallback()))
trainer.train(...)
trainer.run_history.get_metric_values("grad_norm_max")   # one value per epoch
"""

from .monitor import GradientNormMonitorCallback

__version__ = "0.2.0"

__all__ = ["GradientNormMonitorCallback"]
