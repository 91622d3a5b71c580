//! The front end never panics: arbitrary strings and soups of the language's tokens go through
//! `load_program` and come back as `Ok` or `Err` (with a renderable diagnostic).

use icl::front::load_program;
use proptest::prelude::*;

/// Tokens of the language (keywords, names, numbers, operators, brackets, newlines).
const TOKENS: &[&str] = &[
    "param",
    "reg",
    "assume",
    "output",
    "for",
    "in",
    "from",
    "mov",
    "mul",
    "div",
    "aff",
    "scalar",
    "vec",
    "mat",
    "prev",
    "col",
    "mean",
    "all",
    "I",
    "T",
    "d",
    "n",
    "x",
    "y",
    "one",
    "is_x",
    "is_y",
    "count",
    "a",
    "b",
    "w",
    "lambda",
    "i",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "0.5",
    "1e308",
    "1e309",
    "9223372036854775807",
    "99999999999999999999",
    "65535",
    "<-",
    "+",
    "-",
    "*",
    "/",
    "^",
    "^T",
    "|",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "@",
    "=",
    ">=",
    "<=",
    "..",
    "..=",
    "\n",
    "\n",
    " ",
    "#",
    "é",
    "\t",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|v| v.join(" "))
}

/// A valid prefix followed by a token soup, so that the later phases (not only the parser) see
/// arbitrary input.
fn prefixed_soup() -> impl Strategy<Value = String> {
    token_soup().prop_map(|s| {
        format!("param d = 2\nparam n = 2\nreg a: vec[d]\nmov a <- x from prev\n{s}\noutput o\n")
    })
}

/// Statement-shaped soup: lines of a keyword then a few tokens.
fn line_soup() -> impl Strategy<Value = String> {
    let line = (
        prop::sample::select(
            &[
                "mov", "mul", "div", "aff", "reg", "assume", "param", "for", "output",
            ][..],
        ),
        prop::collection::vec(prop::sample::select(TOKENS), 0..10),
    )
        .prop_map(|(k, rest)| format!("{k} {}", rest.join(" ")));
    prop::collection::vec(line, 0..12)
        .prop_map(|ls| format!("param d = 2\nparam n = 2\n{}\n", ls.join("\n")))
}

fn check(src: &str, sets: &[(String, String)]) {
    match load_program("fuzz.icl", src, sets) {
        Ok(p) => {
            // An accepted program is well formed: every IR invariant holds, and (checked here
            // independently) ids are in range, the output is scalar, aff coefficients dense.
            if let Err(e) = icl::ir::validate(&p) {
                panic!("the front end accepted a program the IR validator rejects: {e}\n{src}");
            }
            let nr = p.registers.len();
            assert!(p.output.index() < nr && p.reg(p.output).shape.is_scalar());
            for op in &p.ops {
                assert!(
                    op.kind.dst().index() < nr && op.kind.reads().iter().all(|&r| r.index() < nr)
                );
                if let icl::ir::OpKind::Aff { dst, terms, bias } = &op.kind {
                    let ds = p.reg(*dst).shape.size();
                    assert_eq!(bias.len(), ds);
                    for t in terms {
                        assert_eq!(t.coef.len(), ds * p.reg(t.src.reg).shape.size());
                    }
                }
            }
        }
        Err(d) => {
            assert!(
                !d.items.is_empty(),
                "an Err carries at least one diagnostic"
            );
            let _ = d.render();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,200}") {
        check(&s, &[]);
    }

    #[test]
    fn token_soups_never_panic(s in token_soup()) {
        check(&s, &[]);
    }

    #[test]
    fn prefixed_soups_never_panic(s in prefixed_soup()) {
        check(&s, &[]);
    }

    #[test]
    fn line_soups_never_panic(s in line_soup()) {
        check(&s, &[]);
    }

    #[test]
    fn arbitrary_overrides_never_panic(k in prop::sample::select(&["d", "n", "w", "zz"][..]), v in token_soup()) {
        let src = "param d = 2\nparam n = 2\nparam w = [1, 2]\nmov o <- y from prev\noutput o\n";
        check(src, &[(k.to_string(), v)]);
    }
}

#[test]
fn deep_nesting_and_long_chains_are_errors_not_crashes() {
    let deep = format!(
        "param d = {}1{}\nparam n = 1\n",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    assert!(load_program("deep.icl", &deep, &[]).is_err());
    let neg = format!("param d = {}1\nparam n = 1\n", "-".repeat(10_000));
    assert!(load_program("neg.icl", &neg, &[]).is_err());
    let chain = format!("param d = 1{}\nparam n = 1\n", " + 1".repeat(10_000));
    assert!(load_program("chain.icl", &chain, &[]).is_err());
    let blocks = format!(
        "param d = 1\nparam n = 1\n{}{}",
        "for i in 1..=1 {\n".repeat(1000),
        "}\n".repeat(1000)
    );
    assert!(load_program("blocks.icl", &blocks, &[]).is_err());
    let lists = format!(
        "param d = 1\nparam n = 1\nparam w = {}1{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(load_program("lists.icl", &lists, &[]).is_err());
}

#[test]
fn huge_values_are_errors_not_crashes() {
    for src in [
        "param d = 65535\nparam n = 1\nreg A: mat[d, d]\n",
        "param d = 9223372036854775807\nparam n = 1\n",
        "param d = 2\nparam n = 1\nreg a: vec[9223372036854775807]\n",
        "param d = 2\nparam n = 1\nreg a: vec[2] @ 9223372036854775807\n",
        "param d = 2\nparam n = 1\nmov o <- y from col(9223372036854775807)\noutput o\n",
        "param d = 2\nparam n = 1\nparam k = (0-9223372036854775807-1) / (0-1)\n",
        "param d = 2\nparam n = 1\nparam k = 1e308 * 10\n",
        "param d = 2\nparam n = 1\nfor i in 0-9223372036854775807..=9223372036854775807 {\n}\n",
    ] {
        let r = load_program("big.icl", src, &[]);
        assert!(r.is_err(), "accepted: {src}");
    }
}
