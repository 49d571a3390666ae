"""labml_models.py: the labml_nn PyTorch model that a loom model config describes.

build(config) takes the "model" object of a loom config (models/README.md) and
builds the module labml's experiment builds for it, so that loom checkpoints load
into it with load_state_dict(strict=True) and vice versa. Options that exist only
in loom (feature_map "elu_plus_one", update_rule "sum", attention_layer_norm,
conv_width other than 3) have no labml model and raise ValueError.
"""

from torch import nn

from labml_nn.transformers.basic.autoregressive_experiment import AutoregressiveTransformer
from labml_nn.transformers.fast_weights import (DPFP, FastWeightsAttention, FastWeightsAttentionTransformer,
                                                FastWeightsAttentionTransformerLayer)
from labml_nn.transformers.fast_weights.experiment import AutoregressiveModel as FastWeightsModel
from labml_nn.transformers.feed_forward import FeedForward
from labml_nn.transformers.feedback import (FeedbackAttention, FeedbackTransformer, FeedbackTransformerKV,
                                            FeedbackTransformerLayer)
from labml_nn.transformers.feedback.experiment import AutoregressiveModel as FeedbackModel
from labml_nn.transformers.mha import MultiHeadAttention
from labml_nn.transformers.models import EmbeddingsWithPositionalEncoding, Encoder, Generator, TransformerLayer
from labml_nn.transformers.primer_ez import MultiDConvHeadAttention, SquaredReLU
from labml_nn.transformers.primer_ez.variations import MultiDPHConvHeadAttention, MultiDSharedConvHeadAttention

# loom's defaults for the keys a config may leave out (models/families/language_model.h).
DEFAULTS = {"d_model": 512, "heads": 8, "d_ff": 2048, "layers": 6, "dropout": 0.0, "conv_kernels": "per_channel",
            "conv_width": 3, "feature_map": "dpfp", "dpfp_nu": 1, "update_rule": "delta",
            "attention_layer_norm": False, "shared_kv": True}

PRIMER_ATTENTION = {"per_channel": MultiDConvHeadAttention, "shared": MultiDSharedConvHeadAttention,
                    "per_head": MultiDPHConvHeadAttention}


def transformer(c, attention, activation):
    """The vanilla transformer and Primer EZ: labml's AutoregressiveTransformer with
    TransformerConfigs' encoder ('default'), src_embed ('fixed_pos') and generator."""
    layer = TransformerLayer(d_model=c["d_model"],
                             self_attn=attention(c["heads"], c["d_model"], dropout_prob=c["dropout"]),
                             src_attn=None,
                             feed_forward=FeedForward(c["d_model"], c["d_ff"], dropout=c["dropout"],
                                                      activation=activation, is_gated=False, bias1=True,
                                                      bias2=True, bias_gate=False),
                             dropout_prob=c["dropout"])
    return AutoregressiveTransformer(Encoder(layer, c["layers"]),
                                     EmbeddingsWithPositionalEncoding(c["d_model"], c["vocab"]),
                                     Generator(c["vocab"], c["d_model"]))


def fast_weights(c):
    """fast_weights/experiment.py: fast_weights_transformer."""
    if c["feature_map"] != "dpfp" or c["update_rule"] != "delta" or c["attention_layer_norm"]:
        raise ValueError("labml's fast weights model has DPFP features, the delta rule and no attention layer norm")
    attention = FastWeightsAttention(c["heads"], c["d_model"], c["dropout"], DPFP(nu=c["dpfp_nu"]))
    layer = FastWeightsAttentionTransformerLayer(d_model=c["d_model"], attn=attention,
                                                 feed_forward=FeedForward(c["d_model"], c["d_ff"], c["dropout"]),
                                                 dropout_prob=c["dropout"])
    return FastWeightsModel(c["vocab"], c["d_model"], FastWeightsAttentionTransformer(layer, c["layers"]))


def feedback(c):
    """feedback/experiment.py: feedback_transformer_kv (shared_kv) and feedback_transformer."""
    shared = c["shared_kv"]
    layer = FeedbackTransformerLayer(d_model=c["d_model"],
                                     attn=FeedbackAttention(c["heads"], c["d_model"], c["dropout"],
                                                            is_kv_precomputed=shared),
                                     feed_forward=FeedForward(c["d_model"], c["d_ff"], c["dropout"]),
                                     dropout_prob=c["dropout"])
    if shared:
        stack = FeedbackTransformerKV(layer, c["layers"], c["d_model"], c["heads"])
    else:
        stack = FeedbackTransformer(layer, c["layers"])
    return FeedbackModel(c["vocab"], c["d_model"], stack)


def build(config):
    """The labml model of a loom "model" config (a dict)."""
    c = dict(DEFAULTS, **config)
    family = c.get("family", "transformer")
    if family == "transformer":
        return transformer(c, MultiHeadAttention, nn.ReLU())
    if family == "primer_ez":
        if c["conv_width"] != 3:
            raise ValueError("labml's Primer EZ convolutions have width 3")
        return transformer(c, PRIMER_ATTENTION[c["conv_kernels"]], SquaredReLU())
    if family == "fast_weights":
        return fast_weights(c)
    if family == "feedback":
        return feedback(c)
    raise ValueError(f"no labml model for family {family!r}")
