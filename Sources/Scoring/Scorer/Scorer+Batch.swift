extension Scorer {
    /// Scores a column batch into `output` (whose storage is reused). The loops
    /// run column by column over contiguous arrays and allocate nothing per row;
    /// a column is checked for missing and non-finite values in one pass first,
    /// and only a column that has some takes the per-row path.
    public func score(_ batch: ColumnBatch, into output: inout BatchOutput) {
        precondition(batch.scorer === self, "a batch is scored by the scorer that made it")
        let n = batch.count
        let m = marginCount
        let c = classes.count
        var rejected = batch.rejected
        var errors = batch.cellErrors

        // Margins, class-major: margins[k * n + i].
        var margins = [Double](unsafeUninitializedCapacity: m * n) { buffer, initialized in
            for k in 0..<m {
                for i in 0..<n { buffer[k * n + i] = bias[k] }
            }
            initialized = m * n
        }

        margins.withUnsafeMutableBufferPointer { margins in
            for slot in numberFields.indices {
                batch.withNumbers(slot: slot) { x in
                    var poison = 0.0
                    for i in 0..<n { poison += x[i] * 0 }  // NaN iff some value is NaN or ±inf
                    if poison.isNaN {
                        let impute = numberImpute[slot]
                        for i in 0..<n {
                            var v = x[i]
                            if v.isNaN {
                                if impute.isNaN {
                                    reject(&rejected, &errors, batch, i, missingValue(field: numberFields[slot], row: batch.firstRow + i, record: nil))
                                    continue
                                }
                                v = impute
                            } else if !v.isFinite {
                                reject(&rejected, &errors, batch, i, ScoringError(
                                    row: batch.firstRow + i, field: fieldNames[numberFields[slot]],
                                    message: "expected a finite number, got \(v)"))
                                continue
                            }
                            for k in 0..<m { margins[k * n + i] += numberWeights[slot * m + k] * v }
                        }
                    } else {
                        for k in 0..<m {
                            let w = numberWeights[slot * m + k]
                            let row = margins.baseAddress! + k * n
                            for i in 0..<n { row[i] += w * x[i] }
                        }
                    }
                }
            }

            for slot in categoryFields.indices {
                let weights = categoryWeights[slot]
                weights.withUnsafeBufferPointer { weights in
                    batch.withCodes(slot: slot) { codes in
                        for i in 0..<n {
                            let code = codes[i]
                            if code >= 0 {
                                for k in 0..<m { margins[k * n + i] += weights[Int(code) * m + k] }
                            } else if code == ColumnBatch.missingCode {
                                if categoryMissingIsError[slot] {
                                    reject(&rejected, &errors, batch, i, missingValue(field: categoryFields[slot], row: batch.firstRow + i, record: nil))
                                }
                            } else if categoryUnknownIsError[slot] {
                                let text = batch.unknownTexts.first { $0.0 == i && $0.1 == slot }?.2 ?? ""
                                reject(&rejected, &errors, batch, i, unknownCategory(field: categoryFields[slot], text, row: batch.firstRow + i))
                            }
                        }
                    }
                }
            }
        }

        output.probabilities.removeAll(keepingCapacity: true)
        output.labels.removeAll(keepingCapacity: true)
        output.probabilities.reserveCapacity(n * c)
        output.labels.reserveCapacity(n)
        var scored = 0
        withUnsafeTemporaryAllocation(of: Double.self, capacity: c) { p in
            let p = p.baseAddress!
            for i in 0..<n {
                if !rejected[i] {
                    for k in 0..<m { p[k] = margins[k * n + i] }
                    let label = applyLink(p)
                    if label >= 0 {
                        for k in 0..<c { output.probabilities.append(p[k]) }
                        output.labels.append(Int32(label))
                        scored += 1
                        continue
                    }
                    reject(&rejected, &errors, batch, i, overflow(row: batch.firstRow + i))
                }
                for _ in 0..<c { output.probabilities.append(.nan) }
                output.labels.append(-1)
            }
        }
        errors.sort { ($0.row ?? 0) < ($1.row ?? 0) }
        output.errors = errors
        output.scored = scored
    }

    private func reject(_ rejected: inout [Bool], _ errors: inout [ScoringError], _ batch: ColumnBatch, _ i: Int, _ error: ScoringError) {
        guard !rejected[i] else { return }
        rejected[i] = true
        errors.append(error)
    }
}
