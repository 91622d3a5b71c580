//! The compare step every check shares: a normal form is a sparse map from terms to exact
//! coefficients (an absent term has coefficient 0); the form derived from the weights and the
//! form expected from the program agree iff every coefficient does. Attention (per row, pattern
//! and source row), the MLP (per row: constant, linear and quadratic terms), the embedding and
//! the read-out are all compared by [`compare`].

use super::error::CertifyError;
use super::exact::Dy;
use std::collections::HashMap;
use std::hash::Hash;

/// A sparse normal form: term → exact coefficient.
pub type Coeffs<K> = HashMap<K, Dy>;

/// `form[term] += v`.
pub fn add<K: Hash + Eq>(form: &mut Coeffs<K>, term: K, v: &Dy) {
    form.entry(term).or_default().add_assign(v);
}

/// A term whose derived coefficient differs from the expected one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch<K> {
    pub term: K,
    /// Derived from the weights.
    pub got: Dy,
    /// Expected from the program.
    pub want: Dy,
}

/// Every term whose coefficients in `derived` and `expected` differ, ordered by `rank`, then by
/// term.
pub fn diff<K, R>(
    derived: &Coeffs<K>,
    expected: &Coeffs<K>,
    rank: impl Fn(&K) -> R,
) -> Vec<Mismatch<K>>
where
    K: Hash + Eq + Ord + Clone,
    R: Ord,
{
    let zero = Dy::zero();
    let mut out: Vec<Mismatch<K>> = derived
        .iter()
        .filter_map(|(k, got)| {
            let want = expected.get(k).unwrap_or(&zero);
            (got != want).then(|| Mismatch {
                term: k.clone(),
                got: got.clone(),
                want: want.clone(),
            })
        })
        .collect();
    out.extend(
        expected
            .iter()
            .filter(|(k, want)| !derived.contains_key(*k) && !want.is_zero())
            .map(|(k, want)| Mismatch {
                term: k.clone(),
                got: Dy::zero(),
                want: want.clone(),
            }),
    );
    out.sort_by(|a, b| (rank(&a.term), &a.term).cmp(&(rank(&b.term), &b.term)));
    out
}

/// `Ok` when the forms agree; else the error `reject` makes of the first differing term (in
/// [`diff`] order) and the number of differing terms.
pub fn compare<K, R>(
    derived: &Coeffs<K>,
    expected: &Coeffs<K>,
    rank: impl Fn(&K) -> R,
    reject: impl FnOnce(&Mismatch<K>, usize) -> CertifyError,
) -> Result<(), CertifyError>
where
    K: Hash + Eq + Ord + Clone,
    R: Ord,
{
    let bad = diff(derived, expected, rank);
    match bad.first() {
        Some(first) => Err(reject(first, bad.len())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(terms: &[(u32, i64)]) -> Coeffs<u32> {
        terms.iter().map(|&(k, v)| (k, Dy::int(v))).collect()
    }

    #[test]
    fn absent_terms_are_zero_and_differences_come_in_rank_then_term_order() {
        let derived = form(&[(1, 2), (2, 0), (3, 5), (7, 1)]);
        let expected = form(&[(1, 2), (3, 4), (4, 0), (5, -1)]);
        let bad = diff(&derived, &expected, |_| ());
        let terms: Vec<(u32, Dy, Dy)> = bad.into_iter().map(|m| (m.term, m.got, m.want)).collect();
        assert_eq!(
            terms,
            vec![
                (3, Dy::int(5), Dy::int(4)),
                (5, Dy::int(0), Dy::int(-1)),
                (7, Dy::int(1), Dy::int(0)),
            ]
        );
        let ranked = diff(&derived, &expected, |&k| k != 7);
        assert_eq!(ranked[0].term, 7);
        assert!(compare(&derived, &derived, |_| (), |_, _| unreachable!()).is_ok());
        let err = compare(
            &derived,
            &expected,
            |_| (),
            |m, n| CertifyError::new(super::super::error::Part::Mlp, format!("{} of {n}", m.term)),
        );
        assert_eq!(err.unwrap_err().message, "3 of 3");
    }
}
