"""Optuna's samplers on the compression environment: TPE on the episode reward, NSGA-II on accuracy, latency,
energy and storage jointly — over exactly the parameters the RL agents' actions decode to."""

from __future__ import annotations

from typing import Any

import numpy as np

from autocompress.env.episode import OBJECTIVES
from autocompress.errors import ConfigError
from autocompress.search.base import SearchContext, Searcher, check_keywords
from autocompress.search.baselines import check_warm_start, one_shot_start, spread_params


class OptunaSearcher(Searcher):
    """TPE (``tpe``) or NSGA-II (``nsga2``). The study lives in the run folder's ``optuna.db``, or in the storage
    given by the user: workers launched with the same experiment, env, agent and seed then join one study (and the
    sampler sees every worker's trials), while each worker logs only its own episodes in its run folder. A resumed
    run continues its study; a trial a kill left running is marked failed.

    The hyperparameter ``warm_start`` (a one-shot preset of :data:`~autocompress.search.baselines.WARM_STARTS`, e.g.
    ``tp-taylor``) makes a new study's first trial the policy that one-shot agent would play (found without an
    episode), so the search never ends below the pipeline a user would build by hand; ``warm_spread`` (0–1) makes
    the rest of the sampler's startup trials (TPE's ``n_startup_trials``, NSGA-II's first population) policies near
    it (:func:`~autocompress.search.baselines.spread_params`) instead of uniform draws over the whole space."""

    def check(self) -> None:
        import optuna

        sampler = optuna.samplers.NSGAIISampler if self.agent.algorithm == "nsga2" else optuna.samplers.TPESampler
        check_keywords(self.agent, sampler, {"seed": "--seed"}, {"warm_start": "none", "warm_spread": 0.0})
        check_warm_start(self.agent)

    def setup(self, context: SearchContext) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.multi = self.agent.algorithm == "nsga2"
        params, seed, config = dict(self.agent.hyperparameters), context.seed, context.config
        self.warm_start = str(params.pop("warm_start", "none"))
        self.warm_spread = float(params.pop("warm_spread", 0.0))
        default_startup = 50 if self.multi else 10  # NSGA-II's population_size, TPE's n_startup_trials
        self.startup = int(params.get("population_size" if self.multi else "n_startup_trials", default_startup))
        sampler_class = optuna.samplers.NSGAIISampler if self.multi else optuna.samplers.TPESampler
        shared = config.storage is not None
        name = f"{config.exp}__{config.env}__{self.agent.name}__s{seed}" if shared else context.run_dir.name
        try:
            self.study = optuna.create_study(
                study_name=name,
                storage=context.optuna_storage,
                sampler=sampler_class(seed=seed, **params),
                directions=[("maximize" if sign > 0 else "minimize") for _, sign in OBJECTIVES]
                if self.multi
                else ["maximize"],
                load_if_exists=True,
            )
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(
                f"storage must be a database Optuna can open (sqlite:///path.db, postgresql://user@host/db), but "
                f"'{context.optuna_storage}' failed ({type(exc).__name__}: {first}); check the URL and that the "
                "server is up.",
                params=("storage",),
            ) from None
        # A trial left RUNNING by a kill of this run: if its episode was logged before the kill, the study is told
        # the logged result (the sampler learns from it as the run's record does); otherwise it is failed so TPE
        # does not wait on it. In a shared study other workers' running trials are theirs: only the ones this run
        # started (its unique "run" id, never the folder's name, which two workers may share) are touched.
        self.run_id = context.run_id or str(context.run_dir.resolve())
        rows = context.logged_rows() if context.logged_rows else []
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if shared and trial.user_attrs.get("run") != self.run_id:
                continue
            episode = trial.user_attrs.get("episode")
            if isinstance(episode, int) and 0 <= episode < len(rows):
                row = rows[episode]
                values = [float(row[k]) for k, _ in OBJECTIVES] if self.multi else float(row["reward"])
                self.study.tell(trial.number, values)
            else:
                self.study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)

    def search(self, context: SearchContext, episodes: int) -> None:
        import optuna

        space = context.space
        if self.warm_start != "none" and not self.study.trials:
            center = one_shot_start(self.warm_start, context)
            # skip_if_exists: workers sharing a study (and a seed) enqueue the same trials; each is played once
            self.study.enqueue_trial(center, user_attrs={"warm_start": True}, skip_if_exists=True)
            if self.warm_spread > 0:  # the rest of the startup trials explore around it
                rng = np.random.default_rng(context.seed)
                for _ in range(self.startup - 1):
                    near = spread_params(center, space, self.warm_spread, rng)
                    self.study.enqueue_trial(near, user_attrs={"warm_start": "near"}, skip_if_exists=True)

        def objective(trial: optuna.Trial) -> Any:
            trial.set_user_attr("run", self.run_id)
            trial.set_user_attr("episode", context.episodes_done)  # the progress row this trial's episode becomes
            values = {}
            for name, kind, domain in space.parameters():
                values[name] = (
                    trial.suggest_float(name, *domain) if kind == "float" else trial.suggest_categorical(name, domain)
                )
            result = context.play(space.actions_from_params(values))
            trial.set_user_attr("policy", result.policy)
            if context.stopped:
                trial.study.stop()
            return result.objectives() if self.multi else result.reward

        self.study.optimize(objective, n_trials=episodes, gc_after_trial=False)
