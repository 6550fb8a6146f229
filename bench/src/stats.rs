//! Percentiles of latencies, and the layout of a profiled plan's path.

use std::collections::BTreeMap;
use std::time::Duration;

/// The `p`th percentile (0 to 100) by nearest rank. `latencies` must be sorted.
pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Where each step of the path happens, as the median time since the entry was first sent.
#[derive(Default)]
pub struct Profile {
    stages: BTreeMap<String, Vec<Duration>>,
    plans: usize,
}

impl Profile {
    /// Adds one plan's steps, each named and timed from the moment its entry was sent. A step
    /// seen twice in one plan is named with its occurrence.
    pub fn add(&mut self, steps: &[(String, Duration)]) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (label, offset) in steps {
            let count = seen.entry(label).or_default();
            *count += 1;
            let name = match *count {
                1 => label.clone(),
                n => format!("{label} #{n}"),
            };
            self.stages.entry(name).or_default().push(*offset);
        }
        self.plans += 1;
    }

    /// `(median offset, share of plans that had it, name)`, in order of the median offset.
    pub fn layout(&self) -> Vec<(Duration, f64, String)> {
        let mut rows: Vec<_> = self
            .stages
            .iter()
            .map(|(name, offsets)| {
                let mut offsets = offsets.clone();
                offsets.sort();
                let share = offsets.len() as f64 / self.plans.max(1) as f64;
                (percentile(&offsets, 50.0), share, name.clone())
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn repeated_steps_are_told_apart_and_ordered_by_median() {
        let mut profile = Profile::default();
        let step = |name: &str, us| (name.to_owned(), Duration::from_micros(us));
        profile.add(&[step("b", 20), step("a", 10), step("b", 30)]);
        profile.add(&[step("a", 12), step("b", 22)]);
        let names: Vec<String> = profile.layout().into_iter().map(|r| r.2).collect();
        assert_eq!(names, ["a", "b", "b #2"]);
        assert_eq!(profile.layout()[2].1, 0.5);
    }
}
