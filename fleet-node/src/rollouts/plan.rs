//! A rollout's waves: the sizes an operator asks for, and which device goes in
//! which wave. Sizes are cumulative, each the share of the target updated by the end
//! of its wave (`["1%", "10%", "100%"]`: one percent first, then up to ten, then the
//! rest), in percent or as a count; the last wave takes every device left. Devices
//! are spread over the waves in an order fixed by the rollout's id, so a first wave
//! samples every site rather than the oldest devices of one.

use crate::Error;

/// Waves a rollout may have, at most.
pub const MAX_WAVES: usize = 100;

/// One wave's cumulative size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Percent(u32),
    Count(u64),
}

impl Size {
    /// How many of `total` devices are done by the end of this wave.
    fn reached(self, total: u64) -> u64 {
        match self {
            // At least one device for any share of a non-empty target.
            Size::Percent(p) => (total * u64::from(p)).div_ceil(100).min(total),
            Size::Count(n) => n.min(total),
        }
    }
}

/// Reads the wave sizes as asked; an empty list is one wave of every device.
pub fn parse(waves: &[String]) -> Result<Vec<Size>, Error> {
    if waves.len() > MAX_WAVES {
        return Err(Error::invalid(
            "waves",
            format!("must list at most {MAX_WAVES} waves"),
        ));
    }
    let mut sizes = Vec::with_capacity(waves.len());
    for (i, text) in waves.iter().enumerate() {
        let t = text.trim();
        let size = match t.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Size::Percent(p),
                _ => None.ok_or_else(|| bad(i, text, "a percent must be 1% to 100%"))?,
            },
            None => match t.parse::<u64>() {
                Ok(n) if n >= 1 => Size::Count(n),
                _ => None.ok_or_else(|| {
                    bad(
                        i,
                        text,
                        "must be a count of at least 1 or a percent like \"10%\"",
                    )
                })?,
            },
        };
        sizes.push(size);
    }
    if sizes.is_empty() {
        sizes.push(Size::Percent(100));
    }
    Ok(sizes)
}

fn bad(i: usize, text: &str, why: &str) -> Error {
    Error::invalid("waves", format!("[{i}] {text:?}: {why}"))
}

/// The wave (0-based) of each of `devices`, in the rollout's order; cumulative
/// sizes that do not grow make empty waves, which pass at once.
pub fn assign(rollout: i64, sizes: &[Size], devices: &[i64]) -> Vec<(i64, i32)> {
    let mut ordered: Vec<i64> = devices.to_vec();
    ordered.sort_by_key(|d| (mix(*d ^ rollout), *d));
    let total = ordered.len() as u64;
    let last = sizes.len().saturating_sub(1);
    let ends: Vec<u64> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| if i == last { total } else { s.reached(total) })
        .collect();
    let mut wave = 0usize;
    ordered
        .into_iter()
        .enumerate()
        .map(|(position, device)| {
            while wave < last && position as u64 >= ends[wave] {
                wave += 1;
            }
            (device, i32::try_from(wave).unwrap_or(i32::MAX))
        })
        .collect()
}

/// A fixed scramble of 64 bits (splitmix64's finaliser): a device's place in a
/// rollout's order, the same on every replica.
fn mix(v: i64) -> u64 {
    let mut z = v as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(of: &[&str]) -> Vec<Size> {
        parse(&of.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    fn per_wave(assigned: &[(i64, i32)], waves: usize) -> Vec<usize> {
        (0..waves)
            .map(|w| assigned.iter().filter(|(_, x)| *x as usize == w).count())
            .collect()
    }

    #[test]
    fn cumulative_percents_and_counts_split_the_target() {
        let devices: Vec<i64> = (1..=1000).collect();
        let plan = assign(7, &sizes(&["1%", "10%", "100%"]), &devices);
        assert_eq!(per_wave(&plan, 3), [10, 90, 900]);
        let plan = assign(7, &sizes(&["5", "50%"]), &devices);
        assert_eq!(per_wave(&plan, 2), [5, 995], "the last wave takes the rest");
        let plan = assign(7, &sizes(&["1%", "100%"]), &devices[..3]);
        assert_eq!(per_wave(&plan, 2), [1, 2], "a share of a few is one device");
        let plan = assign(7, &sizes(&["50%", "50%", "100%"]), &devices[..10]);
        assert_eq!(
            per_wave(&plan, 3),
            [5, 0, 5],
            "a size that does not grow is empty"
        );
        assert_eq!(assign(7, &sizes(&[]), &devices).len(), 1000);
    }

    #[test]
    fn the_order_depends_on_the_rollout_not_on_the_ids() {
        let devices: Vec<i64> = (1..=100).collect();
        let first = |rollout| -> Vec<i64> {
            assign(rollout, &sizes(&["10%", "100%"]), &devices)
                .into_iter()
                .filter(|(_, w)| *w == 0)
                .map(|(d, _)| d)
                .collect()
        };
        assert_ne!(first(1), (1..=10).collect::<Vec<_>>(), "not the lowest ids");
        assert_ne!(first(1), first(2), "another rollout samples others");
        assert_eq!(first(1), first(1), "the same on every replica");
    }

    #[test]
    fn bad_sizes_are_refused_naming_the_entry() {
        for bad in ["0%", "101%", "0", "-3", "x", "10 %%", ""] {
            match parse(&[bad.to_string()]) {
                Err(Error::InvalidArgument { field, message }) => {
                    assert_eq!(field, "waves");
                    assert!(message.contains("[0]"), "{message}");
                }
                other => panic!("{bad:?}: expected refused, got {other:?}"),
            }
        }
        let many: Vec<String> = (0..=MAX_WAVES).map(|_| "1%".to_string()).collect();
        assert!(parse(&many).is_err());
    }
}
