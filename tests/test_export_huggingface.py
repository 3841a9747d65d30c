import pytest
import torch
from torch import nn

from prunekit import Masks
from prunekit.export import huggingface as hf

transformers = pytest.importorskip("transformers")


def tiny_bert() -> nn.Module:
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=32,
    )
    return transformers.BertModel(config).eval()


def test_save_pretrained_round_trips_with_masks_and_config(tmp_path):
    model = tiny_bert()
    names = [n for n, p in model.named_parameters() if p.dim() == 2 and "encoder" in n]
    masks = Masks({n: torch.rand(model.get_parameter(n).shape) > 0.75 for n in names})
    hf.save_pretrained(model, tmp_path / "bert", masks=masks)
    loaded = transformers.AutoModel.from_pretrained(str(tmp_path / "bert")).eval()
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        expected = masks.apply(model)(input_ids=ids).last_hidden_state
        assert torch.equal(loaded(input_ids=ids).last_hidden_state, expected)
    info = loaded.config.prunekit
    assert info["version"] == 1 and info["sparsity"] == pytest.approx(masks.sparsity)
    assert set(info["parameters"]) == set(names)
    assert not hasattr(model.config, "prunekit")  # the user's model and config are untouched
    assert int(model.get_parameter(names[0]).count_nonzero()) == model.get_parameter(names[0]).numel()


def test_sparsity_read_from_zeros_and_bad_model():
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight[:, :3] = 0
    assert hf.pruning_summary(model) == {"version": 1, "sparsity": 0.75, "parameters": {"weight": 0.75}}
    with pytest.raises(TypeError, match="PreTrainedModel"):
        hf.save_pretrained(model, "unused")
