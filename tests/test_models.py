import pytest
import torch

from cellclass.models.cnn import (
    MODELS,
    Compact,
    ImageStandardize,
    build_model,
    count_parameters,
    summary,
)


@pytest.mark.parametrize(("name", "expected"), [("badger", 154_882), ("badger-deep", 179_608)])
def test_reference_parameter_counts_match_the_study(name, expected):
    model = build_model(name, in_channels=3, n_classes=2, image_size=256)
    assert count_parameters(model) == expected


def test_badger_has_nine_convs_and_eight_pools_in_the_study_order():
    model = build_model("badger", in_channels=3, n_classes=2, image_size=256)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert convs == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert len(pools) == 8
    assert all(
        m.kernel_size == (3, 3) and m.padding == "same"
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    )


def test_keras_initialisation_zero_biases_and_glorot_range():
    model = build_model("badger", in_channels=3, n_classes=2, image_size=256)
    conv = model.features[0]
    assert torch.count_nonzero(conv.bias) == 0
    limit = (6 / (3 * 9 + 16 * 9)) ** 0.5  # Glorot uniform: sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= limit
    assert conv.weight.abs().max() > 0.8 * limit


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 32, 2), (3, 64, 5), (4, 256, 3)])
def test_every_model_gives_finite_logits(name, channels, size, classes):
    model = build_model(name, in_channels=channels, n_classes=classes, image_size=size)
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = build_model("badger", in_channels=1, n_classes=2, image_size=32)
    torch.manual_seed(3)
    b = build_model("badger", in_channels=1, n_classes=2, image_size=32)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_summary_lists_layers_and_total():
    model = build_model("badger", in_channels=3, n_classes=2, image_size=256)
    text = summary(model, (3, 256, 256))
    assert "Total params: 154,882" in text
    assert "(None, 16, 256, 256)" in text and "(None, 64, 1, 1)" in text


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="badger"):
        build_model("resnet-9000", in_channels=3, n_classes=2, image_size=256)


def test_image_standardize_gives_zero_mean_unit_sd_per_image_and_channel():
    x = torch.rand(3, 2, 16, 16) * torch.tensor([0.1, 0.9]).view(1, 2, 1, 1)
    out = ImageStandardize()(x)
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), torch.ones(3, 2), atol=1e-3)
    blank = ImageStandardize()(torch.full((1, 1, 8, 8), 0.7))
    assert blank.abs().max() < 1e-3  # finite and flat, not NaN


def test_compact_ignores_exposure_unless_told_not_to():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 64, 64) * 0.5
    brighter = x * 1.6 + 0.1  # another exposure and offset, same pattern
    model = build_model("compact", in_channels=1, n_classes=3, image_size=64).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model(brighter), atol=1e-4)
    plain = Compact(1, 3, standardize=False).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x), plain(brighter), atol=1e-2)


@pytest.mark.parametrize("size", [64, 48])  # 48: ceil-mode pools with a ragged edge
def test_badger_pooling_before_relu_is_the_studys_function_and_gradient(size):
    torch.manual_seed(1)
    model = build_model("badger", in_channels=3, n_classes=2, image_size=size)
    # the study's order, conv -> ReLU -> pool, built from the same modules
    study = []
    for module in model.features:
        if isinstance(module, torch.nn.MaxPool2d):
            pool = module
        elif isinstance(module, torch.nn.ReLU) and study[-1] is not None and pool is not None:
            study += [torch.nn.ReLU(), pool]
            pool = None
        else:
            study.append(module)
            pool = None
    study_model = torch.nn.Sequential(*study, model.classifier)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in study) == 8
    x = torch.randn(4, 3, size, size)
    y = torch.tensor([0, 1, 1, 0])
    grads = []
    for net in (model, study_model):
        net.zero_grad()
        out = net(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1], strict=True))
