"""Composing configs from configs/ and key=value words, and rejecting bad ones in one line."""

import pytest
import torch

from vaelab.config import load_config
from vaelab.config.compose import GROUPS, compose_saved, group_options, parse_command_line, to_object
from vaelab.config.help import help_text
from vaelab.config.plain import from_plain, to_plain
from vaelab.config.schema import Binarize, EvalConfig, ModelConfig, OptimConfig
from vaelab.objectives import objective_for
from vaelab.errors import ConfigError, VaelabError


def test_defaults_are_a_bernoulli_500_500_20_vae_trained_by_adam_on_binarized_mnist():
    _, cfg = load_config([])
    assert cfg.model.decoder == "bernoulli"
    assert cfg.model.hidden == [500, 500] and cfg.model.latent_dim == 20
    assert cfg.model.activation.value == "softplus"
    assert cfg.optim.name.value == "adam" and cfg.optim.lr == 1e-3
    assert cfg.data.name == "mnist" and cfg.data.batch_size == 100
    assert cfg.data.binarize is Binarize.dynamic
    assert cfg.eval.ll_samples == 5000


def test_group_choice_and_dotted_overrides_win_in_order():
    _, cfg = load_config(["model=gaussian_learned", "data=frey", "model.latent_dim=5", "model.latent_dim=7"])
    assert cfg.model.decoder == "gaussian_learned"
    assert cfg.data.name == "frey" and cfg.data.binarize is Binarize.none
    assert cfg.model.latent_dim == 7


def test_iwae_objective_with_k_samples_composes():
    _, cfg = load_config(["model=bernoulli", "model.objective=iwae", "model.k=50", "model.latent_dim=50"])
    assert cfg.model.objective == "iwae" and cfg.model.k == 50 and cfg.model.latent_dim == 50


def test_list_and_null_overrides():
    _, cfg = load_config(["model.hidden=[200,100]", "trainer.gradient_clip_val=null", "run.dir=/tmp/x"])
    assert cfg.model.hidden == [200, 100] and cfg.trainer.gradient_clip_val is None and cfg.run.dir == "/tmp/x"


def test_experiment_sets_keys_and_command_line_still_wins():
    _, cfg = load_config(["experiment=smoke", "trainer.max_epochs=3"])
    assert cfg.trainer.limit_train_batches == 20 and cfg.trainer.max_epochs == 3


def test_data_root_follows_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_DATA_DIR", str(tmp_path))
    node, cfg = load_config([])
    assert cfg.data.root == str(tmp_path) and node.data.root == str(tmp_path)
    _, cfg = load_config(["data.root=elsewhere"])
    assert cfg.data.root == "elsewhere"


@pytest.mark.parametrize(
    "words, expected",
    [
        (["model=foo"], "unknown model 'foo': choose one of bernoulli, continuous_bernoulli, gaussian, gaussian_learned, logistic"),
        (["data=cifar"], "unknown data 'cifar': choose one of binarized_mnist, caltech_silhouettes, cifar10, fashion_mnist, frey, mnist, omniglot"),
        (["model.latnt_dim=3"], "unknown key 'model.latnt_dim'"),
        (["model.latnt_dim=3"], "did you mean model.latent_dim?"),
        (["trainer.foo=1"], "unknown key 'trainer.foo'"),
        (["model.latent_dim=0"], "model.latent_dim=0 is invalid: expected an integer >= 1"),
        (["model.k=0"], "model.k=0 is invalid"),
        (["optim.lr=-1"], "optim.lr=-1.0 is invalid: expected a learning rate > 0"),
        (["model.latent_dim=abc"], "bad value for model.latent_dim"),
        (["optim.lr=fast"], "bad value for optim.lr"),
        (["model.objective=vae"], "model.objective=vae is unknown: expected one of [ciwae, elbo, iwae, miwae, piwae, vr]"),
        (["model.objective=iwea"], "did you mean iwae?"),
        (["trainer.max_epochs=2.5"], "bad value for trainer.max_epochs"),
        (["data=frey", "data.binarize=dynamic"], "data.binarize=dynamic is invalid"),
        (["data.test_size=5"], "data.test_size=5 is invalid"),
        (["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps=0 is invalid: expected null or an integer >= 1"),
        (["trainer.checkpoint_every_minutes=0"], "trainer.checkpoint_every_minutes=0.0 is invalid: expected null or a number > 0"),
        (["latent_dim"], "cannot read 'latent_dim'"),
        (["model.estimator=score"], "expected one of [reparam, stl, dreg]"),
        (["model.estimator=stl"], "model.estimator=stl needs model.kl=mc"),
        (["model.estimator=dreg", "model.kl=mc"], "model.estimator=dreg is defined for model.objective=iwae"),
        (["model.beta=-1"], "model.beta=-1.0 is invalid: expected a finite weight >= 0"),
        (["model.objective=vr", "model.kl=mc", "model.alpha=1"], "model.alpha=1.0 is invalid: expected 0 <= alpha < 1"),
        (["model.objective=vr", "model.kl=mc", "model.alpha=-0.5"], "model.alpha=-0.5 is invalid: expected 0 <= alpha < 1"),
        (["model.objective=vr", "model.kl=mc", "model.estimator=dreg"], "model.estimator=dreg is not defined for model.objective=vr"),
        (["model.objective=miwae", "model.kl=mc", "model.m=0"], "model.m=0 is invalid: expected an integer >= 1"),
        (["model.objective=miwae"], "model.objective=miwae is made of importance log-weights, which sample the KL: set model.kl=mc"),
        (["model.objective=ciwae", "model.kl=mc", "model.ciwae_mix=1.5"], "model.ciwae_mix=1.5 is invalid: expected 0 <= c <= 1"),
        (["model.objective=piwae", "model.kl=mc", "model.estimator=stl"], "model.estimator=stl is not defined for model.objective=piwae"),
        (["model.objective=piwae", "model.kl=mc", "model.free_bits=1"], "model.free_bits floors the analytic KL of the ELBO"),
        (["optim.kl_warmup_epochs=-1"], "optim.kl_warmup_epochs=-1.0 is invalid"),
    ],
)
def test_bad_configs_fail_with_one_clear_line(words, expected):
    with pytest.raises(ConfigError) as error:
        load_config(words)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_estimator_options_compose_where_they_are_defined():
    _, cfg = load_config(["experiment=iwae_1layer", "model.estimator=dreg", "model.k=5"])
    assert cfg.model.estimator.value == "dreg" and objective_for(cfg.model).warning() is None
    _, cfg = load_config(["model.estimator=stl", "model.kl=mc", "model.k=3", "model.beta=0.5", "optim.kl_warmup_epochs=2.5"])
    assert cfg.model.estimator.value == "stl" and cfg.model.beta == 0.5 and cfg.optim.kl_warmup_epochs == 2.5
    _, cfg = load_config(["experiment=iwae_1layer", "model.estimator=stl"])  # allowed; fit warns that it is biased
    assert "biased encoder gradient" in objective_for(cfg.model).warning()


def test_plain_configs_load_with_weights_only_and_type_back_to_the_same_config(tmp_path):
    """What a checkpoint's hyperparameters keep: plain values that torch.load(weights_only=True)
    reads, enums by name, and from them the same typed configs; a key an older checkpoint
    lacks takes its default."""
    node, cfg = load_config(["experiment=iwae_1layer", "model.estimator=dreg", "optim.lr=3e-4"])
    plain = {"model": to_plain(node.model), "optim": to_plain(cfg.optim), "eval": to_plain(node.eval)}
    assert plain["model"]["decoder"] == "bernoulli" and plain["model"]["estimator"] == "dreg"
    torch.save(plain, tmp_path / "hparams.pt")
    loaded = torch.load(tmp_path / "hparams.pt", weights_only=True)
    assert from_plain(ModelConfig, loaded["model"]) == cfg.model
    assert from_plain(OptimConfig, loaded["optim"]) == cfg.optim
    assert from_plain(EvalConfig, loaded["eval"]) == cfg.eval
    older = {key: value for key, value in loaded["model"].items() if key != "estimator"}
    assert from_plain(ModelConfig, older).estimator == ModelConfig().estimator


def test_a_saved_config_takes_dotted_overrides_and_refuses_group_choices():
    saved, _ = load_config(["experiment=smoke", "model.latent_dim=7"])
    node = compose_saved(saved, parse_command_line(["trainer.max_epochs=9"]), keeps="a resumed run keeps its saved config")
    cfg = to_object(node)
    assert cfg.trainer.max_epochs == 9 and cfg.model.latent_dim == 7 and cfg.trainer.limit_train_batches == 20
    with pytest.raises(ConfigError, match=r"^evaluation keeps the run's saved config: drop data=, model= and change single keys"):
        compose_saved(saved, parse_command_line(["data=frey", "model=gaussian"]), keeps="evaluation keeps the run's saved config")
    with pytest.raises(ConfigError, match=r"unknown key 'eval.ll_sample' in override 'eval.ll_sample=3'; did you mean eval.ll_samples\?"):
        compose_saved(saved, parse_command_line(["eval.ll_sample=3"]), keeps="a resumed run keeps its saved config")


def test_a_malformed_or_missing_saved_config_is_one_line(tmp_path):
    from vaelab.training.run_dir import load_saved_config

    with pytest.raises(VaelabError, match=r"config.yaml is missing, so the run's data and settings are unknown$"):
        load_saved_config(tmp_path)
    (tmp_path / "config.yaml").write_text("model: {latent_dim: [1,\n")
    with pytest.raises(ConfigError, match=rf"^cannot read config file {tmp_path / 'config.yaml'}: while parsing"):
        load_saved_config(tmp_path)
    (tmp_path / "config.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping of keys to values"):
        load_saved_config(tmp_path)


def test_every_group_option_composes():
    for group in GROUPS:
        for option in group_options(group):
            words = [f"{group}={option}"]
            if group == "data" and option == "frey":
                words.append("model=gaussian")
            if group == "model" and option == "logistic":
                words.append("data.binarize=none")  # it refuses binarized data
            load_config(words)


def test_help_lists_groups_options_and_keys():
    text = help_text()
    for group in GROUPS:
        assert group in text
    for token in ("gaussian_learned", "model.latent_dim", "eval.ll_samples", "elbo|iwae", "--cfg"):
        assert token in text


def test_trainer_settings_lightning_rejects_are_one_config_error(tmp_path):
    from vaelab.fit import build_run
    from vaelab.config.compose import compose, parse_command_line

    for word, expected in [("trainer.precision=17", "Precision '17' is invalid"), ("trainer.strategy=foo", "strategy='foo'")]:
        node = compose(parse_command_line([word, f"run.dir={tmp_path}"]))
        with pytest.raises(ConfigError) as error:
            build_run(node)
        assert expected in str(error.value) and "\n" not in str(error.value)


def test_stl_on_the_iwae_bound_warns_that_it_is_biased(tmp_path):
    from vaelab.fit import build_run
    from vaelab.config.compose import compose, parse_command_line

    node = compose(parse_command_line(["experiment=iwae_1layer", "model.estimator=stl", f"run.dir={tmp_path / 'run'}"]))
    with pytest.warns(UserWarning, match=r"model.estimator=stl on the iwae objective with k=50 has a biased encoder gradient"):
        build_run(node)
