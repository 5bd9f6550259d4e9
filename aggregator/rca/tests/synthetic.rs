//! The engine on generated incidents: a fault injected into one component of a random
//! service map, propagating with delay to its callers, with noise and unrelated glitches, must
//! rank that component first — for several seeds and every fault shape, in memory and through
//! the CSV reader with dirty rows.

use qos_rca::synthetic::{generate, write_case, Shape, Spec};
use qos_rca::{case, rank, Config};

const SHAPES: [Shape; 3] = [Shape::Spike, Shape::LevelShift, Shape::Drift];

#[test]
fn the_injected_component_ranks_first_for_every_seed_and_shape() {
    let config = Config::default();
    let mut misses = Vec::new();
    for shape in SHAPES {
        for seed in 1..=12 {
            let g = generate(&Spec {
                seed,
                shape,
                ..Spec::default()
            });
            let r = rank(&g.incident, &config);
            if r[0].component != g.root {
                let top: Vec<_> = r.iter().take(3).map(|c| (&c.component, c.score)).collect();
                misses.push(format!(
                    "{shape:?} seed {seed}: root {} but {top:?}",
                    g.root
                ));
            }
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
}

#[test]
fn the_ranking_carries_the_root_metric_onset_and_evidence() {
    let spec = Spec {
        seed: 7,
        ..Spec::default()
    };
    let g = generate(&spec);
    let r = rank(&g.incident, &Config::default());
    let first = &r[0];
    assert_eq!(first.component, g.root);
    let onset = first.onset.expect("an onset");
    assert!(
        onset > spec.at && onset <= spec.at + 4.0 * spec.step,
        "{first:?}"
    );
    assert!(first.metric.is_some() && first.metric_z > 3.0, "{first:?}");
    assert!(!first.evidence.is_empty());
    // Every component of the map is listed once.
    assert_eq!(r.len(), spec.components);
}

#[test]
fn without_a_fault_nothing_stands_out() {
    let g = generate(&Spec {
        seed: 3,
        amplitude: 0.0,
        ..Spec::default()
    });
    let r = rank(&g.incident, &Config::default());
    assert!(
        r.iter().all(|c| c.metric_z < 3.0),
        "{:?}",
        r.iter()
            .map(|c| (&c.component, c.metric_z))
            .collect::<Vec<_>>()
    );
}

#[test]
fn dirty_csv_rows_are_skipped_and_counted_and_the_root_still_wins() {
    let dir = std::env::temp_dir().join(format!("qos-rca-synthetic-{}", std::process::id()));
    for (seed, shape) in [
        (21, Shape::Spike),
        (22, Shape::LevelShift),
        (23, Shape::Drift),
    ] {
        let g = generate(&Spec {
            seed,
            shape,
            ..Spec::default()
        });
        write_case(&dir, &g).unwrap();
        let config = Config::default();
        let loaded = case::load(&dir, g.incident.at, &config).unwrap();
        let s = loaded.skipped;
        assert!(
            s.bad_value > 0 && s.out_of_window > 0 && s.malformed > 0,
            "{s:?}"
        );
        assert_eq!(loaded.incident.edges, g.incident.edges);
        let r = rank(&loaded.incident, &config);
        assert_eq!(r[0].component, g.root, "{shape:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn coarse_one_minute_samples_still_find_the_root() {
    // Five samples after `at`, as in data sets scraped once a minute: a drift has barely begun
    // when the window ends, so it is held to the top 3; bursts and shifts to the top place.
    // At least 17 of 20 seeds each (measured: 18, 18 and 19).
    let config = Config::default();
    for (shape, within, at_least) in [
        (Shape::Spike, 1, 17),
        (Shape::LevelShift, 1, 17),
        (Shape::Drift, 3, 17),
    ] {
        let hits = (200..220)
            .filter(|&seed| {
                let g = generate(&Spec {
                    seed,
                    shape,
                    step: 60.0,
                    ..Spec::default()
                });
                let r = rank(&g.incident, &config);
                r.iter().take(within).any(|c| c.component == g.root)
            })
            .count();
        assert!(hits >= at_least, "{shape:?}: {hits}/20 in the top {within}");
    }
}
