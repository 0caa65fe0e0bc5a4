"""ModelFreezer: layer groups, freezing and unfreezing for every flag combination, and real fine-tuning
runs."""

import copy
import itertools
import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pytorch_accelerated.finetuning import BN_MODULES, LayerGroup, ModelFreezer
from pytorch_accelerated.trainer import Trainer, TrainerCallback

FLAGS = list(itertools.product([False, True], repeat=3))
FLAG_IDS = [f"freeze_bn={a}-eval={b}-refreeze={c}" for a, b, c in FLAGS]


class ConvBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.2)

    def forward(self, x):
        return self.drop(self.act(self.bn(self.conv(x))))


class SmallCNN(nn.Module):
    """Groups: 0 stem conv | 1 stem bn, relu | 2 block, avgpool, flatten | 3 head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.block = ConvBlock(4, 8)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.pool(self.block(self.stem(x))))

    @staticmethod
    def make_dataset(num_samples, seed):
        generator = torch.Generator().manual_seed(seed)
        images = torch.randn(num_samples, 3, 8, 8, generator=generator)
        return TensorDataset(images, torch.randint(0, 3, (num_samples,), generator=generator))


class Residual(nn.Sequential):
    """A named block deriving from nn.Sequential: it stays one group."""

    def forward(self, x):
        return x + super().forward(x)


class NestedModel(nn.Module):
    """Groups: 0 dropout_in, Linear(4, 6) | 1 BatchNorm1d | 2 Linear(6, 6), ReLU | 3 Residual |
    4 branches.scaled (a Sequential with a parameter of its own), Tanh | 5 head."""

    def __init__(self):
        super().__init__()
        self.dropout_in = nn.Dropout(0.1)
        self.encoder = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(6)),
                nn.Sequential(
                    nn.Sequential(nn.Linear(6, 6), nn.ReLU()), Residual(nn.Linear(6, 6), nn.ReLU())
                ),
            ]
        )
        scaled = nn.Sequential(nn.Linear(6, 6))
        scaled.register_parameter("scale", nn.Parameter(torch.ones(6)))
        self.branches = nn.ModuleDict({"scaled": scaled, "act": nn.Tanh()})
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.encoder[1](self.encoder[0](self.dropout_in(x)))
        x = self.branches["act"](self.branches["scaled"](x) * self.branches["scaled"].scale)
        return self.head(x)

    @staticmethod
    def make_dataset(num_samples, seed):
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn(num_samples, 4, generator=generator)
        return TensorDataset(inputs, (inputs @ torch.randn(4, 3, generator=generator)).argmax(dim=1))


MODELS = pytest.mark.parametrize("model_class", [SmallCNN, NestedModel], ids=["cnn", "nested"])


def _ids(params):
    return {id(param) for param in params}


def _is_bn(module):
    return isinstance(module, BN_MODULES)


def _modules_kept_in_eval(freezer, freeze_batch_norms):
    """Every module in the groups ``freeze()`` covers by default, batch norms only when they are frozen."""
    groups = freezer.get_layer_groups()[:-1]
    return _ids(m for group in groups for m in group.submodules() if freeze_batch_norms or not _is_bn(m))


def _bn_params(model):
    return _ids(param for module in model.modules() if _is_bn(module) for param in module.parameters())


# --- layer groups -------------------------------------------------------------------------------


def test_cnn_groups_open_containers_and_merge_parameterless_modules():
    """CNN groups open plain containers and join parameterless modules to the group before them."""
    model = SmallCNN()
    groups = ModelFreezer(model).get_layer_groups()
    assert [group.layer_group_idx for group in groups] == [0, 1, 2, 3]
    assert [list(group.modules) for group in groups] == [
        [model.stem[0]],
        [model.stem[1], model.stem[2]],
        [model.block, model.pool[0], model.pool[1]],
        [model.head],
    ]
    assert [group.module for group in groups] == [model.stem[0], model.stem[1], model.block, model.head]
    assert [_ids(group.params) for group in groups] == [
        _ids(model.stem[0].parameters()),
        _ids(model.stem[1].parameters()),
        _ids(model.block.parameters()),
        _ids(model.head.parameters()),
    ]
    assert _ids(groups[1].batch_norm_params) == _ids(model.stem[1].parameters())
    assert _ids(groups[2].batch_norm_params) == _ids(model.block.bn.parameters())
    assert not groups[0].batch_norm_params and not groups[3].batch_norm_params


def test_nested_groups_follow_the_documented_rule():
    model = NestedModel()
    groups = ModelFreezer(model).get_layer_groups()
    inner, residual = model.encoder[1]
    scaled = model.branches["scaled"]
    assert [list(group.modules) for group in groups] == [
        [model.dropout_in, model.encoder[0][0]],  # a leading parameterless module joins the first group
        [model.encoder[0][1]],
        [inner[0], inner[1]],
        [residual],  # a subclass of nn.Sequential stays whole
        [scaled, model.branches["act"]],  # a container with a parameter of its own stays whole
        [model.head],
    ]
    assert groups[0].module is model.encoder[0][0]
    assert _ids(groups[4].params) == _ids([scaled.scale, *scaled[0].parameters()])
    assert _ids(p for group in groups for p in group.params) == _ids(model.parameters())


def test_a_shared_parameter_belongs_to_the_first_group_that_holds_it():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, 4)
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 10)
            self.head.weight = self.embedding.weight

    model = Tied()
    groups = ModelFreezer(model).get_layer_groups()
    assert [_ids(group.params) for group in groups] == [
        {id(model.embedding.weight)},
        _ids(model.body.parameters()),
        {id(model.head.bias)},
    ]


def test_a_fully_shared_module_joins_the_group_before_it():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Linear(3, 3), nn.Sequential(shared))
    groups = ModelFreezer(model).get_layer_groups()
    assert len(groups) == 2
    assert groups[1].modules == (model[1], shared)


def test_parameters_on_the_model_itself_are_reported():
    class WithToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(4))
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

    with pytest.warns(UserWarning, match="cls_token"):
        freezer = ModelFreezer(WithToken())
    freezer.freeze()
    assert freezer.model.cls_token.requires_grad


@pytest.mark.parametrize(
    "model", [nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Dropout())], ids=["leaf", "no-params"]
)
def test_a_model_without_groups_is_rejected(model):
    with pytest.raises(ValueError, match="no layer groups"):
        ModelFreezer(model)


def test_creating_a_freezer_changes_nothing():
    model = SmallCNN()
    model.stem[0].weight.requires_grad_(False)
    model.eval()
    ModelFreezer(model)
    assert not model.stem[0].weight.requires_grad
    assert not any(module.training for module in model.modules())


# --- indices ------------------------------------------------------------------------------------


def _frozen_groups(freezer):
    return [group.layer_group_idx for group in freezer.get_layer_groups() if group.is_frozen]


def test_ranges_are_inclusive_both_ways_and_negative_indices_count_back():
    """Ranges are inclusive in either direction and negative indices count from the end."""
    for from_index, to_index in [(3, 4), (4, 3), (-3, -2), (-2, 3)]:
        freezer = ModelFreezer(NestedModel())
        freezer.freeze(from_index, to_index)
        assert _frozen_groups(freezer) == [3, 4]
    freezer = ModelFreezer(NestedModel())
    freezer.freeze()
    assert _frozen_groups(freezer) == [0, 2, 3, 4]  # group 1 holds only a batch norm, left trainable
    freezer.unfreeze(-3, -4)  # groups 3 and 2
    assert _frozen_groups(freezer) == [0, 4]


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("freeze", {"from_index": 6}),
        ("freeze", {"to_index": -7}),
        ("unfreeze", {"from_index": -7}),
        ("unfreeze", {"to_index": 6}),
    ],
)
def test_an_out_of_range_index_names_the_group_count_and_changes_nothing(method, kwargs):
    """An out-of-range index names the number of groups and changes nothing."""
    freezer = ModelFreezer(NestedModel())
    freezer.freeze(2, 2)
    states = [param.requires_grad for param in freezer.model.parameters()]
    name = next(iter(kwargs))
    message = (
        rf"{name}={kwargs[name]} is out of range: the model has 6 layer groups, so indices go from -6 to 5"
    )
    with pytest.raises(IndexError, match=message):
        getattr(freezer, method)(**kwargs)
    assert [param.requires_grad for param in freezer.model.parameters()] == states


def test_the_default_freeze_on_a_single_group_model_explains_why_it_fails():
    with pytest.raises(IndexError, match="to_index=-2 is out of range: the model has 1 layer group,"):
        ModelFreezer(nn.Sequential(nn.Linear(2, 2))).freeze()


def test_a_non_integer_index_is_rejected():
    with pytest.raises(TypeError, match="from_index must be an integer, got 1.5"):
        ModelFreezer(SmallCNN()).freeze(from_index=1.5)


# --- every flag combination ---------------------------------------------------------------------


@MODELS
@pytest.mark.parametrize("freeze_batch_norms, set_modules_as_eval, refreeze_batch_norms", FLAGS, ids=FLAG_IDS)
def test_freeze_and_unfreeze(model_class, freeze_batch_norms, set_modules_as_eval, refreeze_batch_norms):
    model = model_class()
    freezer = ModelFreezer(model, freeze_batch_norms=freeze_batch_norms)
    head, bn_params = _ids(model.head.parameters()), _bn_params(model)

    freezer.freeze(set_modules_as_eval=set_modules_as_eval)
    model.train()  # as the Trainer does at the start of every epoch
    for param in model.parameters():
        frozen = id(param) not in head and (freeze_batch_norms or id(param) not in bn_params)
        assert param.requires_grad is not frozen
    assert _ids(freezer.get_trainable_parameters()) == _ids(p for p in model.parameters() if p.requires_grad)
    kept = _modules_kept_in_eval(freezer, freeze_batch_norms) if set_modules_as_eval else set()
    for module in model.modules():
        assert module.training is (id(module) not in kept)

    frozen_before = _ids(p for p in model.parameters() if not p.requires_grad)
    param_groups = freezer.unfreeze(refreeze_batch_norms=refreeze_batch_norms)
    model.train()
    stay_frozen = bn_params if freeze_batch_norms and refreeze_batch_norms else set()
    for param in model.parameters():
        assert param.requires_grad is (id(param) not in stay_frozen)
    assert all(group.keys() == {"params"} for group in param_groups)
    returned = [param for group in param_groups for param in group["params"]]
    assert len(returned) == len(_ids(returned))
    assert _ids(returned) == frozen_before - stay_frozen
    for module in model.modules():
        assert module.training is not (id(module) in kept and _is_bn(module) and bool(stay_frozen))


def test_unfreeze_leaves_out_parameters_already_in_the_optimizer():
    model = SmallCNN()
    freezer = ModelFreezer(model)
    freezer.freeze()
    everything = torch.optim.SGD(model.parameters(), lr=0.1)
    assert freezer.unfreeze(optimizer=everything) == []
    assert all(param.requires_grad for param in model.parameters())

    freezer.freeze()
    some = torch.optim.SGD([*model.head.parameters(), model.block.conv.weight], lr=0.1)
    param_groups = freezer.unfreeze(optimizer=some)
    # block.conv.weight is unfrozen too, but the optimizer already holds it
    assert [_ids(group["params"]) for group in param_groups] == [{id(model.stem[0].weight)}]


def test_unfreeze_returns_one_param_group_per_group_in_walking_order():
    model = NestedModel()
    freezer = ModelFreezer(model)
    freezer.freeze(0, -1)
    backwards = freezer.unfreeze(5, 3)
    assert [_ids(group["params"]) for group in backwards] == [
        _ids(model.head.parameters()),
        _ids(model.branches["scaled"].parameters()),
        _ids(model.encoder[1][1].parameters()),
    ]
    forwards = freezer.unfreeze(0, 5)  # group 1 (a batch norm) was never frozen, groups 3-5 already unfrozen
    assert [_ids(group["params"]) for group in forwards] == [
        _ids(model.encoder[0][0].parameters()),
        _ids(model.encoder[1][0].parameters()),
    ]


def test_refreeze_batch_norms_freezes_batch_norms_unfrozen_earlier():
    model = SmallCNN()
    freezer = ModelFreezer(model, freeze_batch_norms=True)
    freezer.freeze()
    freezer.unfreeze(refreeze_batch_norms=False)
    assert all(param.requires_grad for param in model.parameters())
    param_groups = freezer.unfreeze(1, 1)
    assert param_groups == []
    assert not any(param.requires_grad for param in model.stem[1].parameters())
    assert all(param.requires_grad for param in model.block.bn.parameters())  # outside the range


def test_unfrozen_modules_take_the_models_current_mode():
    model = SmallCNN()
    freezer = ModelFreezer(model)
    freezer.freeze(set_modules_as_eval=True)
    model.eval()
    freezer.unfreeze()
    assert not any(module.training for module in model.modules())
    model.train()
    assert all(module.training for module in model.modules())


def test_modules_kept_in_eval_stay_there_in_copies_and_pickles():
    model = SmallCNN()
    ModelFreezer(model).freeze(set_modules_as_eval=True)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.train()
        assert not clone.block.training and not clone.block.conv.training
        assert clone.block.bn.training and clone.head.training
        freezer = ModelFreezer(clone)
        freezer.unfreeze()
        clone.train()
        assert all(module.training for module in clone.modules())


def test_is_frozen_looks_past_batch_norms_left_trainable():
    model = SmallCNN()
    freezer = ModelFreezer(model)
    freezer.freeze(2, 2)
    groups = freezer.get_layer_groups()
    assert isinstance(groups[2], LayerGroup)
    assert [group.is_frozen for group in groups] == [False, False, True, False]
    assert model.block.bn.weight.requires_grad
    freezer_bn = ModelFreezer(model, freeze_batch_norms=True)
    freezer_bn.freeze(1, 1)
    assert freezer_bn.get_layer_groups()[1].is_frozen


# --- real training runs -------------------------------------------------------------------------


class TrainingModes(TrainerCallback):
    """Each module's ``training`` flag at every training step."""

    def __init__(self, model):
        self.modules = list(model.modules())
        self.seen = set()

    def on_train_step_start(self, trainer, **kwargs):
        self.seen.add(tuple(module.training for module in self.modules))


def _snapshot(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _changed(before, after, names):
    return {name for name in names if not torch.equal(before[name], after[name])}


def _train_one_epoch(trainer, model_class):
    """Train one epoch; return the names of the parameters and batch-norm running stats that changed."""
    before = _snapshot(trainer.model)
    trainer.train(
        train_dataset=model_class.make_dataset(32, seed=0),
        eval_dataset=model_class.make_dataset(16, seed=1),
        num_epochs=1,
        per_device_batch_size=8,
    )
    return _changed(before, _snapshot(trainer.model), before)


def _running_stats(model):
    bn_names = [name for name, module in model.named_modules() if _is_bn(module)]
    return {f"{name}.{stat}" for name in bn_names for stat in ("running_mean", "running_var")}


def _trainable(model):
    return {name for name, param in model.named_parameters() if param.requires_grad}


@MODELS
@pytest.mark.parametrize("freeze_batch_norms, set_modules_as_eval, refreeze_batch_norms", FLAGS, ids=FLAG_IDS)
def test_fine_tuning_with_the_trainer(
    model_class, freeze_batch_norms, set_modules_as_eval, refreeze_batch_norms
):
    torch.manual_seed(0)
    model = model_class()
    names = {name for name, _ in model.named_parameters()}
    bn_names = {name for name in names if id(model.get_parameter(name)) in _bn_params(model)}
    stats = _running_stats(model)
    freezer = ModelFreezer(model, freeze_batch_norms=freeze_batch_norms)
    freezer.freeze(set_modules_as_eval=set_modules_as_eval)
    kept = _modules_kept_in_eval(freezer, freeze_batch_norms) if set_modules_as_eval else set()
    modes = TrainingModes(model)
    optimizer = torch.optim.SGD(freezer.get_trainable_parameters(), lr=0.1)
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, callbacks=(modes,))

    # 1: the head learns (and the batch norms, unless frozen); the frozen weights do not move
    changed = _train_one_epoch(trainer, model_class)
    head_names = {"head.weight", "head.bias"}
    assert (
        changed & names == _trainable(model) == (head_names if freeze_batch_norms else head_names | bn_names)
    )
    bn_in_eval = freeze_batch_norms and set_modules_as_eval
    assert changed & stats == (set() if bn_in_eval else stats)
    assert modes.seen == {tuple(id(module) not in kept for module in modes.modules)}

    # 2: unfreeze, add the new parameters with their own learning rate, and they learn too
    for param_group in freezer.unfreeze(
        refreeze_batch_norms=refreeze_batch_norms, optimizer=trainer.optimizer
    ):
        trainer.optimizer.add_param_group({**param_group, "lr": 0.05})
    bn_stay_frozen = freeze_batch_norms and refreeze_batch_norms
    expected = names - bn_names if bn_stay_frozen else names
    assert _trainable(model) == expected
    in_optimizer = _ids(param for group in trainer.optimizer.param_groups for param in group["params"])
    assert in_optimizer == _ids(map(model.get_parameter, expected))
    modes.seen.clear()
    changed = _train_one_epoch(trainer, model_class)
    assert changed & names == expected
    bn_in_eval = bn_stay_frozen and set_modules_as_eval
    assert changed & stats == (set() if bn_in_eval else stats)
    still_kept = {
        id(module) for module in modes.modules if id(module) in kept and _is_bn(module) and bn_in_eval
    }
    assert modes.seen == {tuple(id(module) not in still_kept for module in modes.modules)}


def test_each_unfrozen_group_trains_at_its_own_learning_rate():
    torch.manual_seed(0)
    model = SmallCNN()
    freezer = ModelFreezer(model)
    freezer.freeze()
    optimizer = torch.optim.SGD(freezer.get_trainable_parameters(), lr=0.1)
    block_group, stem_group = freezer.unfreeze(2, 0)  # group 1 holds only a batch norm, never frozen
    optimizer.add_param_group({**block_group, "lr": 0.0})
    optimizer.add_param_group({**stem_group, "lr": 0.1})
    changed = _train_one_epoch(Trainer(model, nn.CrossEntropyLoss(), optimizer, callbacks=()), SmallCNN)
    assert {"block.conv.weight", "stem.0.weight", "head.weight"} & changed == {"stem.0.weight", "head.weight"}
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.0, 0.1]
