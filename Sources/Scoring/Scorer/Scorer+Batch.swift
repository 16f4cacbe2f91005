extension Scorer {
    /// Scores a column batch into `output` (whose storage is reused). The loops
    /// run column by column over contiguous arrays and allocate nothing per row;
    /// a column is checked for missing and non-finite values in one pass first,
    /// and only a column that has some takes the per-row path.
    public func score(_ batch: ColumnBatch, into output: inout BatchOutput) {
        precondition(batch.scorer === self, "a batch is scored by the scorer that made it")
        if let trees { return score(batch, trees: trees, into: &output) }
        let n = batch.count
        let m = marginCount
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
                        for i in 0..<n {
                            guard let v = numberCell(x[i], slot: slot, row: i, batch, &rejected, &errors) else { continue }
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
                            } else {
                                checkCategoryCell(code, slot: slot, row: i, batch, &rejected, &errors)
                            }
                        }
                    }
                }
            }
        }

        finishBatch(batch, margins: margins, rowMajor: false, rejected: &rejected, errors: &errors, into: &output)
    }

    /// A tree ensemble's batch: the columns go into a row-major design matrix
    /// (one allocation per batch), then the trees walk it.
    private func score(_ batch: ColumnBatch, trees: TreeProgram, into output: inout BatchOutput) {
        let n = batch.count
        let w = designTemplate.count
        var rejected = batch.rejected
        var errors = batch.cellErrors
        var design = [Double](unsafeUninitializedCapacity: max(n * w, 1)) { buffer, initialized in
            for i in 0..<n {
                for j in 0..<w { buffer[i * w + j] = designTemplate[j] }
            }
            initialized = n * w
        }
        for slot in numberFields.indices {
            let column = numberColumns[slot]
            batch.withNumbers(slot: slot) { x in
                for i in 0..<n {
                    // A value passed through as missing leaves the template's NaN.
                    if let v = numberCell(x[i], slot: slot, row: i, batch, &rejected, &errors) { design[i * w + column] = v }
                }
            }
        }
        for slot in categoryFields.indices {
            let column = categoryColumns[slot]
            let oneHot = categoryOneHot[slot]
            batch.withCodes(slot: slot) { codes in
                for i in 0..<n {
                    let code = codes[i]
                    if code >= 0 {
                        if oneHot { design[i * w + column + Int(code)] = 1 } else { design[i * w + column] = Double(code) }
                    } else {
                        checkCategoryCell(code, slot: slot, row: i, batch, &rejected, &errors)
                    }
                }
            }
        }
        var margins = [Double](repeating: 0, count: max(n * marginCount, 1))
        design.withUnsafeMutableBufferPointer { design in
            margins.withUnsafeMutableBufferPointer { margins in
                trees.evaluate(rows: design.baseAddress!, count: n, into: margins.baseAddress!)
            }
        }
        finishBatch(batch, margins: margins, rowMajor: true, rejected: &rejected, errors: &errors, into: &output)
    }

    /// Applies the link to each row's margins (`rowMajor`: `margins[i * m + k]`,
    /// else `margins[k * n + i]`) and fills `output`.
    private func finishBatch(
        _ batch: ColumnBatch, margins: [Double], rowMajor: Bool, rejected: inout [Bool], errors: inout [ScoringError],
        into output: inout BatchOutput
    ) {
        let n = batch.count
        let m = marginCount
        let c = outputCount
        output.probabilities.removeAll(keepingCapacity: true)
        output.labels.removeAll(keepingCapacity: true)
        output.probabilities.reserveCapacity(n * c)
        output.labels.reserveCapacity(n)
        var scored = 0
        withUnsafeTemporaryAllocation(of: Double.self, capacity: c) { p in
            let p = p.baseAddress!
            for i in 0..<n {
                if !rejected[i] {
                    for k in 0..<m { p[k] = rowMajor ? margins[i * m + k] : margins[k * n + i] }
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

    /// A number cell's value for the estimator: itself, or the impute value when
    /// missing; nil when missing and passed through, or when the row is rejected
    /// (missing and required, or not finite).
    @inline(__always)
    private func numberCell(
        _ v: Double, slot: Int, row i: Int, _ batch: ColumnBatch, _ rejected: inout [Bool], _ errors: inout [ScoringError]
    ) -> Double? {
        if v.isNaN {
            if numberPassThrough[slot] { return nil }
            let impute = numberImpute[slot]
            if impute.isNaN {
                reject(&rejected, &errors, batch, i, missingValue(field: numberFields[slot], row: batch.firstRow + i, record: nil))
                return nil
            }
            return impute
        }
        guard v.isFinite else {
            reject(&rejected, &errors, batch, i, ScoringError(
                row: batch.firstRow + i, field: fieldNames[numberFields[slot]], message: "expected a finite number, got \(v)"))
            return nil
        }
        return v
    }

    /// A category cell without a code (missing or unknown): rejects the row when the field's policy says so.
    private func checkCategoryCell(
        _ code: Int32, slot: Int, row i: Int, _ batch: ColumnBatch, _ rejected: inout [Bool], _ errors: inout [ScoringError]
    ) {
        if code == ColumnBatch.missingCode {
            if categoryMissingIsError[slot] {
                reject(&rejected, &errors, batch, i, missingValue(field: categoryFields[slot], row: batch.firstRow + i, record: nil))
            }
        } else if categoryUnknownIsError[slot] {
            let text = batch.unknownTexts.first { $0.0 == i && $0.1 == slot }?.2 ?? ""
            reject(&rejected, &errors, batch, i, unknownCategory(field: categoryFields[slot], text, row: batch.firstRow + i))
        }
    }

    private func reject(_ rejected: inout [Bool], _ errors: inout [ScoringError], _ batch: ColumnBatch, _ i: Int, _ error: ScoringError) {
        guard !rejected[i] else { return }
        rejected[i] = true
        errors.append(error)
    }
}
