"""Reference deconvnet in TensorFlow, and export of the weights the edge's NumPy one needs.

The reference computes the same projection as `edge.deconv` (read its docstring) but by
other means: the Keras layers give the forward activations, and every backward step
(unpooling with switches, transposed convolutions) is TensorFlow's own gradient of the
forward op with the relevance as `output_gradients`. The adjoint of a convolution is its
input-gradient, and max-pool's gradient routes to the recorded argmax, so this is the
deconvnet with no hand-written backward code to share bugs with the NumPy version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.deconv import DeconvWeights


def extract_weights(model: Any) -> DeconvWeights:
    g = model.get_layer
    k0, b0 = g("conv0").get_weights()
    gamma, beta, mean, var = g("bn0").get_weights()
    ks, bs = g("fire_squeeze").get_weights()
    k1, b1 = g("fire_e1").get_weights()
    k3, b3 = g("fire_e3").get_weights()
    wb, _bb = g("bottleneck").get_weights()
    wl, _bl = g("logits").get_weights()
    return DeconvWeights(
        conv0_kernel=k0,
        conv0_bias=b0,
        bn_gamma=gamma,
        bn_beta=beta,
        bn_mean=mean,
        bn_var=var,
        bn_eps=float(g("bn0").epsilon),
        squeeze_kernel=ks,
        squeeze_bias=bs,
        e1_kernel=k1,
        e1_bias=b1,
        e3_kernel=k3,
        e3_bias=b3,
        pool=int(g("pool").pool_size[0]),
        alpha=float(g("lrelu0").negative_slope),
        w_bottleneck=wb,
        w_logits=wl,
    )


def reference_attribution(model: Any, x: NDArray[np.float32], class_index: int) -> NDArray[np.float32]:
    import keras
    import tensorflow as tf

    alpha = float(model.get_layer("lrelu0").negative_slope)

    def lrelu(t: Any) -> Any:
        return tf.where(t >= 0, t, alpha * t)

    def conv_transpose(y: Any, layer_name: str, length: int, c_in: int) -> Any:
        kernel = tf.constant(model.get_layer(layer_name).get_weights()[0])
        z = tf.zeros((1, length, c_in))
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = tf.nn.conv1d(z, kernel, stride=1, padding="SAME")
        return tape.gradient(out, z, output_gradients=y)

    inp = x.reshape(1, -1, 1).astype(np.float32)
    feats = keras.Model(model.input, [model.get_layer("fire_concat").output, model.get_layer("pool").output])
    fire, pooled = feats(inp, training=False)
    wb = model.get_layer("bottleneck").get_weights()[0]
    wl = model.get_layer("logits").get_weights()[0]
    v = tf.reshape(tf.constant(wb @ wl[:, class_index]), pooled.shape)
    r_p = tf.nn.relu(pooled * v)
    fire_var = tf.Variable(fire)
    pool_size = int(model.get_layer("pool").pool_size[0])
    with tf.GradientTape() as tape:
        p = tf.nn.max_pool1d(fire_var, ksize=pool_size, strides=pool_size, padding="VALID")
    r_fire = tape.gradient(p, fire_var, output_gradients=r_p)
    length = int(x.shape[0])
    e = int(model.get_layer("fire_e1").filters)
    s = int(model.get_layer("fire_squeeze").filters)
    c0 = int(model.get_layer("conv0").filters)
    r_s = conv_transpose(lrelu(r_fire[..., :e]), "fire_e1", length, s) + conv_transpose(
        lrelu(r_fire[..., e:]), "fire_e3", length, s
    )
    r_b = conv_transpose(lrelu(r_s), "fire_squeeze", length, c0)
    bn = model.get_layer("bn0")
    gamma, _beta, _mean, var = bn.get_weights()
    r_h = r_b * (gamma / np.sqrt(var + bn.epsilon))
    r_x = conv_transpose(lrelu(r_h), "conv0", length, 1)
    return np.asarray(r_x)[0, :, 0].astype(np.float32)
