"""The run history's interface, prefixes and round trip."""

import pytest

from pytorch_accelerated.trainer import InMemoryRunHistory


def test_update_get_latest_and_values():
    history = InMemoryRunHistory()
    history.update_metric("loss", 1.0)
    history.update_metric("loss", 0.5)
    assert history.get_metric_values("loss") == [1.0, 0.5]
    assert history.get_latest_metric("loss") == 0.5
    assert history.get_metric_names() == ["loss"]
    assert history.get_metric_values("missing") == []


def test_missing_metric_names_the_known_ones():
    history = InMemoryRunHistory()
    history.update_metric("eval_loss_epoch", 1.0)
    with pytest.raises(KeyError, match="eval_loss_epoch"):
        history.get_latest_metric("eval_accuracy")


def test_epochs_count_from_one_and_reset():
    history = InMemoryRunHistory()
    assert history.current_epoch == 1
    history.increment_epoch()
    history.update_metric("x", 1)
    assert history.current_epoch == 2
    history.reset()
    assert history.current_epoch == 1 and history.get_metric_names() == []


def test_metric_prefixes_nest_and_end_with_the_block():
    history = InMemoryRunHistory()
    with history.metric_prefix("ema_"):
        history.update_metric("eval_loss_epoch", 1.0)
        with history.metric_prefix("swa_"):
            history.update_metric("eval_loss_epoch", 2.0)
    history.update_metric("eval_loss_epoch", 3.0)
    assert history.get_latest_metric("ema_eval_loss_epoch") == 1.0
    assert history.get_latest_metric("ema_swa_eval_loss_epoch") == 2.0
    assert history.get_latest_metric("eval_loss_epoch") == 3.0


def test_state_dict_round_trip():
    history = InMemoryRunHistory()
    history.update_metric("a", 1.0)
    history.increment_epoch()
    history.update_metric("a", 2.0)
    history.update_metric("b", "text")
    restored = InMemoryRunHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.state_dict() == history.state_dict()
    assert restored.current_epoch == 2


def test_stored_values_are_copies():
    history = InMemoryRunHistory()
    value = [1, 2]
    history.update_metric("list", value)
    value.append(3)
    assert history.get_latest_metric("list") == [1, 2]
