"""A small NumPy deep-learning framework (Module 0.2): layers with explicit forward/backward,
losses, optimizers, a `Network` that trains them, a gradient checker, and a PyTorch twin to compare.

`from helpers.nn import Network, LinearLayer, ActivationLayer, Adam, CrossEntropyLoss, grad_check, …`
"""
from .activations import ACTIVATIONS, ActivationLayer, activation, activation_grad
from .dropout import DropoutLayer
from .gradcheck import grad_check, loss_grad_check, numerical_grad, rel_error
from .layer import Layer
from .linear import LinearLayer
from .losses import CrossEntropyLoss, HingeLoss, Loss, MSELoss
from .network import Network, mlp
from .ics import NoiseLayer, distribution_shift, gradient_change, layer_input_stats, noisy_bn_mlp
from .normalization import BatchNormLayer, LayerNormLayer
from .optim import SGD, Adam, Optimizer, RMSprop, clip_grad_norm, cosine_lr

__all__ = [
    "ACTIVATIONS", "ActivationLayer", "Adam", "BatchNormLayer", "CrossEntropyLoss", "DropoutLayer",
    "HingeLoss", "Layer", "LayerNormLayer", "LinearLayer", "Loss", "MSELoss", "Network", "NoiseLayer", "Optimizer",
    "RMSprop", "SGD", "activation", "activation_grad", "clip_grad_norm", "cosine_lr", "distribution_shift",
    "grad_check", "gradient_change", "layer_input_stats", "loss_grad_check", "mlp", "noisy_bn_mlp", "numerical_grad",
    "rel_error",
]
