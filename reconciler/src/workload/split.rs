//! `cairn split`, a preparation step: every row of a folder of CSV files goes to a
//! training or a holdout folder, by a seeded hash of its key column (or of its index
//! without one), so a row stays on its side when other rows change, are added or are
//! removed. Each input file `<name>.csv` gives `<train>/<name>.csv` and
//! `<holdout>/<name>.csv`, header kept. Rows stream through: memory stays bounded.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::data::{column_index, csv_files};
use super::train::{splitmix64, unit};
use super::{Error, Result};

/// What to split and where.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// A CSV file, or a folder of CSV files with the same header.
    pub data: PathBuf,
    pub train: PathBuf,
    pub holdout: PathBuf,
    /// The share of rows that go to `holdout`, in (0, 1).
    pub share: f64,
    /// The column whose value decides a row's side (e.g. `loan_id`).
    pub key: Option<String>,
    pub seed: u64,
}

/// How many rows went where.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub files: usize,
    pub train_rows: usize,
    pub holdout_rows: usize,
}

/// Splits `options.data` into `options.train` and `options.holdout`.
pub fn split(options: &SplitOptions) -> Result<SplitReport> {
    if !(options.share > 0.0 && options.share < 1.0) {
        return Err(Error::InvalidOption {
            name: "share",
            value: options.share.to_string(),
            expected: "a share of the rows between 0 and 1, e.g. 0.2",
        });
    }
    let files = csv_files(&options.data)?;
    for dir in [&options.train, &options.holdout] {
        fs::create_dir_all(dir).map_err(|source| Error::CreateOut {
            path: dir.clone(),
            source,
        })?;
    }
    let mut report = SplitReport {
        files: files.len(),
        train_rows: 0,
        holdout_rows: 0,
    };
    let mut index = 0usize;
    for file in &files {
        let csv_error = |source| Error::Csv {
            path: file.clone(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(file)
            .map_err(csv_error)?;
        let header = reader.headers().map_err(csv_error)?.clone();
        let key = match &options.key {
            Some(name) => {
                let columns: Vec<String> = header.iter().map(|c| c.trim().to_string()).collect();
                Some(column_index(file, &columns, name)?)
            }
            None => None,
        };
        let name = file.file_name().map_or("data.csv".into(), |n| n.to_owned());
        let mut writers = Vec::new();
        for dir in [&options.train, &options.holdout] {
            let path = dir.join(&name);
            let mut w = writer(&path)?;
            w.write_record(&header).map_err(|e| write_error(&path, e))?;
            writers.push((path, w));
        }
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            if record.len() != header.len() {
                return Err(Error::RaggedRow {
                    path: file.clone(),
                    line: record.position().map_or(0, |p| p.line()),
                    expected: header.len(),
                    found: record.len(),
                });
            }
            let hash = match key {
                Some(k) => fnv1a(record[k].trim().as_bytes()),
                None => index as u64,
            };
            index += 1;
            let holdout = unit(splitmix64(options.seed ^ splitmix64(hash))) < options.share;
            let (path, w) = &mut writers[usize::from(holdout)];
            w.write_record(&record).map_err(|e| write_error(path, e))?;
            if holdout {
                report.holdout_rows += 1;
            } else {
                report.train_rows += 1;
            }
        }
        for (path, mut w) in writers {
            w.flush().map_err(|source| Error::Write { path, source })?;
        }
    }
    Ok(report)
}

fn writer(path: &Path) -> Result<csv::Writer<fs::File>> {
    csv::Writer::from_path(path).map_err(|e| write_error(path, e))
}

fn write_error(path: &Path, e: csv::Error) -> Error {
    Error::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

/// FNV-1a, 64 bits: a stable hash of a key's text.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_side_depends_on_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("in");
        fs::create_dir_all(&data).unwrap();
        let rows: Vec<String> = (0..200).map(|i| format!("k{i},{i}")).collect();
        fs::write(data.join("d.csv"), format!("id,x\n{}\n", rows.join("\n"))).unwrap();
        let run = |out: &str| {
            let options = SplitOptions {
                data: data.clone(),
                train: dir.path().join(out).join("train"),
                holdout: dir.path().join(out).join("holdout"),
                share: 0.25,
                key: Some("id".into()),
                seed: 7,
            };
            let report = split(&options).unwrap();
            let holdout = fs::read_to_string(options.holdout.join("d.csv")).unwrap();
            (report, holdout)
        };
        let (first, holdout) = run("a");
        assert_eq!(first.train_rows + first.holdout_rows, 200);
        assert!((30..70).contains(&first.holdout_rows), "{first:?}");
        // Another row first: every other row keeps its side.
        fs::write(
            data.join("d.csv"),
            format!("id,x\nnew,1\n{}\n", rows.join("\n")),
        )
        .unwrap();
        let (_, again) = run("b");
        let old: Vec<&str> = holdout.lines().collect();
        let new: Vec<&str> = again.lines().filter(|l| !l.starts_with("new,")).collect();
        assert_eq!(old, new);
    }
}
