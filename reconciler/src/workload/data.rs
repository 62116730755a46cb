//! Reads a training table from CSV: one file, or every `*.csv` of a folder in name order.
//!
//! Every file must have the same header, the label column must hold 0 or 1 in every row,
//! and every row must have as many fields as the header. The other columns become
//! features when every one of their cells is a finite number; the rest are reported as
//! skipped (ids such as `L100001`, free text, columns with empty cells).

use std::fs;
use std::path::{Path, PathBuf};

use super::{Error, Result};
use crate::diagnostics::did_you_mean;

/// A numeric column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub name: String,
    pub values: Vec<f64>,
}

/// The rows of all files, column by column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    /// The label of each row, 0.0 or 1.0.
    pub labels: Vec<f64>,
    /// Numeric columns other than the label, in header order.
    pub features: Vec<Column>,
    /// Columns other than the label that are not numeric in every row, in header order.
    pub skipped: Vec<String>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// Returns the CSV files of `data`: itself if it is a file, else its `*.csv` files sorted
/// by name (not recursive).
pub(crate) fn csv_files(data: &Path) -> Result<Vec<PathBuf>> {
    let read_error = |source| Error::ReadData {
        path: data.to_path_buf(),
        source,
    };
    let metadata = fs::metadata(data).map_err(read_error)?;
    if !metadata.is_dir() {
        return Ok(vec![data.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(data).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let is_csv = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("csv"));
        if is_csv && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::NoCsvFiles {
            path: data.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

/// The header shared by all files, and where the label is in it.
struct Header {
    file: PathBuf,
    names: Vec<String>,
    label: usize,
}

/// Reads the table of `data` with `label` as the label column.
pub(crate) fn load(data: &Path, label: &str) -> Result<Table> {
    let files = csv_files(data)?;
    let mut header: Option<Header> = None;
    let mut labels = Vec::new();
    // One entry per header column; `None` once a cell is not a number (and for the label).
    let mut columns: Vec<Option<Vec<f64>>> = Vec::new();

    for file in &files {
        let csv_error = |source| Error::Csv {
            path: file.clone(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true) // ragged rows are reported below, with their line
            .trim(csv::Trim::All)
            .from_path(file)
            .map_err(csv_error)?;
        let names: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_string)
            .collect();
        if names.iter().all(String::is_empty) {
            return Err(Error::EmptyData { path: file.clone() });
        }
        let header = match &header {
            Some(first) if first.names != names => {
                return Err(Error::HeaderMismatch {
                    path: file.clone(),
                    first: first.file.clone(),
                    expected: first.names.clone(),
                    found: names,
                });
            }
            Some(first) => first,
            None => {
                let first = check_header(file, names, label)?;
                columns = (0..first.names.len())
                    .map(|i| (i != first.label).then(Vec::new))
                    .collect();
                header.insert(first)
            }
        };

        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let line = record.position().map_or(0, |p| p.line());
            if record.len() != header.names.len() {
                return Err(Error::RaggedRow {
                    path: file.clone(),
                    line,
                    expected: header.names.len(),
                    found: record.len(),
                });
            }
            let value = &record[header.label];
            match value.parse::<f64>() {
                Ok(y) if y == 0.0 || y == 1.0 => labels.push(y),
                _ => {
                    return Err(Error::BadLabel {
                        path: file.clone(),
                        line,
                        row: labels.len() + 1,
                        label: label.to_string(),
                        value: value.to_string(),
                    })
                }
            }
            for (cell, column) in record.iter().zip(columns.iter_mut()) {
                if let Some(values) = column {
                    match cell.parse::<f64>() {
                        Ok(x) if x.is_finite() => values.push(x),
                        _ => *column = None,
                    }
                }
            }
        }
    }

    let Some(header) = header else {
        // Unreachable in practice (`csv_files` never returns an empty list), but cheap.
        return Err(Error::EmptyData {
            path: data.to_path_buf(),
        });
    };
    if labels.is_empty() {
        return Err(Error::EmptyData {
            path: data.to_path_buf(),
        });
    }
    let mut features = Vec::new();
    let mut skipped = Vec::new();
    for (i, (name, column)) in header.names.into_iter().zip(columns).enumerate() {
        match column {
            Some(values) => features.push(Column { name, values }),
            None if i != header.label => skipped.push(name),
            None => {}
        }
    }
    Ok(Table {
        labels,
        features,
        skipped,
    })
}

/// Checks the first header: unique names, and the label among them.
fn check_header(file: &Path, names: Vec<String>, label: &str) -> Result<Header> {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(Error::DuplicateColumn {
                path: file.to_path_buf(),
                column: name.clone(),
            });
        }
    }
    let Some(index) = names.iter().position(|n| n == label) else {
        let suggestion = did_you_mean(label, names.iter().map(String::as_str)).map(str::to_string);
        return Err(Error::LabelMissing {
            path: file.to_path_buf(),
            label: label.to_string(),
            columns: names,
            suggestion,
        });
    };
    Ok(Header {
        file: file.to_path_buf(),
        names,
        label: index,
    })
}

/// Where column `name` is in a file's header; a missing one is named with the columns
/// there are and the nearest.
pub(crate) fn column_index(file: &Path, header: &[String], name: &str) -> Result<usize> {
    header
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| Error::MissingColumn {
            path: file.to_path_buf(),
            column: name.to_string(),
            columns: header.to_vec(),
            suggestion: did_you_mean(name, header.iter().map(String::as_str)).map(str::to_string),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_files_in_name_order_and_skips_non_numeric_columns() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.csv", "id,x,note,y\nL3,3,,1\n");
        write(
            dir.path(),
            "a.CSV",
            "id,x,note,y\nL1,1,hi,0\nL2, 2 ,there,1\n",
        );
        write(dir.path(), "readme.txt", "not data");
        let table = load(dir.path(), "y").unwrap();
        assert_eq!(table.labels, vec![0.0, 1.0, 1.0]);
        assert_eq!(
            table.features,
            vec![Column {
                name: "x".into(),
                values: vec![1.0, 2.0, 3.0]
            }]
        );
        assert_eq!(table.skipped, vec!["id", "note"]);
    }

    #[test]
    fn accepts_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.csv", "x,y\n1,0\n2,1.0\n");
        assert_eq!(load(&file, "y").unwrap().rows(), 2);
    }

    #[test]
    fn missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope"), "y").unwrap_err();
        assert!(matches!(err, Error::ReadData { .. }), "{err:?}");
    }

    #[test]
    fn folder_without_csv_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data.txt", "x,y\n1,0\n");
        let err = load(dir.path(), "y").unwrap_err();
        assert!(matches!(err, Error::NoCsvFiles { .. }), "{err:?}");
        assert!(err.to_string().starts_with("no CSV files"), "{err}");
    }

    #[test]
    fn missing_label_lists_columns_and_suggests() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.csv", "age,income,defaulted\n1,2,0\n");
        let err = load(&file, "default").unwrap_err();
        let Error::LabelMissing {
            columns,
            suggestion,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(columns, &["age", "income", "defaulted"]);
        assert_eq!(suggestion.as_deref(), Some("defaulted"));
        let message = err.to_string();
        assert!(
            message.contains("the columns are: age, income, defaulted (did you mean `defaulted`?)"),
            "{message}"
        );

        let err = load(&file, "zzz").unwrap_err();
        assert!(
            matches!(
                err,
                Error::LabelMissing {
                    suggestion: None,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn label_not_zero_or_one_names_row_and_value() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.csv", "x,y\n1,0\n2,1\n");
        write(dir.path(), "b.csv", "x,y\n3,1\n4,yes\n");
        let err = load(dir.path(), "y").unwrap_err();
        let Error::BadLabel {
            path,
            line,
            row,
            value,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert!(path.ends_with("b.csv"));
        assert_eq!((*line, *row, value.as_str()), (3, 4, "yes"));
        assert!(
            err.to_string()
                .ends_with("b.csv:3: label `y` is `yes` in data row 4; labels must be 0 or 1"),
            "{err}"
        );

        let file = write(dir.path(), "c.csv", "x,y\n1,2\n");
        let err = load(&file, "y").unwrap_err();
        assert!(
            matches!(&err, Error::BadLabel { value, .. } if value == "2"),
            "{err:?}"
        );
        let file = write(dir.path(), "d.csv", "x,y\n1,\n");
        let err = load(&file, "y").unwrap_err();
        assert!(
            matches!(&err, Error::BadLabel { value, .. } if value.is_empty()),
            "{err:?}"
        );
    }

    #[test]
    fn empty_data() {
        let dir = tempfile::tempdir().unwrap();
        let header_only = write(dir.path(), "h.csv", "x,y\n");
        let err = load(&header_only, "y").unwrap_err();
        assert!(matches!(err, Error::EmptyData { .. }), "{err:?}");
        let empty = write(dir.path(), "e.csv", "");
        let err = load(&empty, "y").unwrap_err();
        assert!(matches!(err, Error::EmptyData { .. }), "{err:?}");
    }

    #[test]
    fn ragged_row_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.csv", "x,z,y\n1,2,0\n3,1\n");
        let err = load(&file, "y").unwrap_err();
        assert!(
            matches!(
                err,
                Error::RaggedRow {
                    line: 3,
                    expected: 3,
                    found: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("t.csv:3: the row has 2 field(s) but the header has 3"),
            "{err}"
        );
    }

    #[test]
    fn headers_must_match_across_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.csv", "x,y\n1,0\n");
        write(dir.path(), "b.csv", "y,x\n1,0\n");
        let err = load(dir.path(), "y").unwrap_err();
        assert!(matches!(err, Error::HeaderMismatch { .. }), "{err:?}");
    }

    #[test]
    fn duplicate_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.csv", "x,x,y\n1,2,0\n");
        let err = load(&file, "y").unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateColumn { column, .. } if column == "x"),
            "{err:?}"
        );
    }

    #[test]
    fn infinite_and_nan_cells_are_not_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.csv", "a,b,c,y\n1,inf,NaN,0\n2,3,4,1\n");
        let table = load(&file, "y").unwrap();
        assert_eq!(table.features.len(), 1);
        assert_eq!(table.skipped, vec!["b", "c"]);
    }
}
