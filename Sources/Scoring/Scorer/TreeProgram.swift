/// A tree ensemble compiled for scoring: every tree's nodes in one contiguous
/// array, laid out breadth-first so that a split's right child follows its
/// left child. Both comparison rules become `x <= threshold` (XGBoost's
/// `x < t` in float32 is `x <= t.nextDown` on float32-rounded inputs), so one
/// walk serves every library.
///
/// Rows without a missing value, in an ensemble without categorical or
/// zero-as-missing splits, take a branch-free walk: a leaf points at itself
/// with threshold +∞, every tree runs exactly its depth, and eight rows walk
/// together so their loads overlap. Other rows take the general walk.
struct TreeProgram: Sendable {
    struct Node: Sendable {
        var threshold: Double
        var feature: Int32
        /// The left child; the right child is `left + 1`. A leaf: itself.
        var left: Int32
    }

    static let leaf: UInt8 = 1
    static let defaultLeft: UInt8 = 2
    static let categorical: UInt8 = 4
    static let zeroIsMissing: UInt8 = 8

    let nodes: [Node]
    let flags: [UInt8]
    let leafValue: [Double]
    /// Categorical splits: their bitset of left-going codes, `categoryWords[i]`
    /// words from `categoryStart[i]` in `categoryBits`.
    let categoryStart: [Int32]
    let categoryWords: [Int32]
    let categoryBits: [UInt64]
    let roots: [Int32]
    let depths: [Int32]
    let treeMargin: [Int32]
    let marginCount: Int
    let width: Int
    let float32: Bool
    let average: Bool
    /// The margins' starting values (rounded to float32 when the ensemble sums in float32).
    let intercepts: [Double]
    /// Per margin: 1 / its tree count, for an averaging ensemble.
    let marginScale: [Double]
    /// Whether any split needs the general walk for every row.
    let needsGeneralWalk: Bool
    /// Per node (the same layout): the training data that reached it; empty when the model does
    /// not say, and then it cannot be explained.
    let cover: [Double]
    /// Per tree: its expected value, the cover-weighted mean of its leaves (TreeSHAP's base).
    let expected: [Double]

    init(_ ensemble: ModelDocument.TreeEnsemble, intercepts: [Double], width: Int) {
        let marginCount = intercepts.count
        var nodes: [Node] = []
        var flags: [UInt8] = []
        var leafValue: [Double] = []
        var categoryStart: [Int32] = []
        var categoryWords: [Int32] = []
        var categoryBits: [UInt64] = []
        var roots: [Int32] = []
        var depths: [Int32] = []
        var treeMargin: [Int32] = []
        var treesPerMargin = [Int](repeating: 0, count: marginCount)
        let float32 = ensemble.precision == .float32
        var general = false
        var cover: [Double] = []
        var expected: [Double] = []
        let explainable = ensemble.trees.allSatisfy { $0.cover != nil }

        for tree in ensemble.trees {
            let sets = Dictionary((tree.categorical ?? []).map { ($0.node, $0.left) }, uniquingKeysWith: { a, _ in a })
            let zero = Set(tree.zeroIsMissing ?? [])
            let base = Int32(nodes.count)
            roots.append(base)
            treeMargin.append(Int32(tree.margin))
            treesPerMargin[tree.margin] += 1
            // Breadth-first: (original node, depth); children get consecutive slots.
            var queue = [(0, 0)]
            var head = 0
            var depth = 0
            if explainable, let covers = tree.cover {
                // The node means, children before parents (a child's index is above its parent's in no particular order, so recurse).
                func mean(_ i: Int) -> Double {
                    if tree.feature[i] == -1 { return float32 ? Double(Float(tree.value[i])) : tree.value[i] }
                    let (l, r) = (tree.left[i], tree.right[i])
                    return (covers[l] * mean(l) + covers[r] * mean(r)) / covers[i]
                }
                expected.append(mean(0))
            }
            while head < queue.count {
                let (i, d) = queue[head]
                let slot = base + Int32(head)
                head += 1
                depth = max(depth, d)
                if explainable { cover.append(tree.cover![i]) }
                if tree.feature[i] == -1 {
                    nodes.append(Node(threshold: .infinity, feature: 0, left: slot))
                    flags.append(Self.leaf)
                    leafValue.append(float32 ? Double(Float(tree.value[i])) : tree.value[i])
                    categoryStart.append(0)
                    categoryWords.append(0)
                    continue
                }
                var threshold = tree.threshold[i]
                if ensemble.split == .lessThan {
                    threshold = float32 ? Double(Float(threshold)).nextDown : threshold.nextDown
                }
                nodes.append(Node(threshold: threshold, feature: Int32(tree.feature[i]), left: base + Int32(queue.count)))
                var f: UInt8 = tree.defaultLeft[i] ? Self.defaultLeft : 0
                if let set = sets[i] {
                    f |= Self.categorical
                    general = true
                    let words = (set.max() ?? -1) / 64 + 1
                    categoryStart.append(Int32(categoryBits.count))
                    categoryWords.append(Int32(words))
                    var bits = [UInt64](repeating: 0, count: words)
                    for code in set { bits[code >> 6] |= 1 << UInt64(code & 63) }
                    categoryBits.append(contentsOf: bits)
                } else {
                    categoryStart.append(0)
                    categoryWords.append(0)
                }
                if zero.contains(i) {
                    f |= Self.zeroIsMissing
                    general = true
                }
                flags.append(f)
                leafValue.append(0)
                queue.append((tree.left[i], d + 1))
                queue.append((tree.right[i], d + 1))
            }
            depths.append(Int32(depth))
        }
        self.nodes = nodes
        self.flags = flags
        self.leafValue = leafValue
        self.categoryStart = categoryStart
        self.categoryWords = categoryWords
        self.categoryBits = categoryBits
        self.roots = roots
        self.depths = depths
        self.treeMargin = treeMargin
        self.marginCount = marginCount
        self.width = width
        self.float32 = float32
        average = ensemble.average
        self.intercepts = float32 ? intercepts.map { Double(Float($0)) } : intercepts
        marginScale = treesPerMargin.map { $0 > 0 ? 1 / Double($0) : 1 }
        needsGeneralWalk = general
        self.cover = cover
        self.expected = expected
    }

    /// The margins of one design row `x` (rounded in place first when float32).
    func evaluate(row x: UnsafeMutablePointer<Double>, into margins: UnsafeMutablePointer<Double>) {
        if float32 { for j in 0..<width { x[j] = Double(Float(x[j])) } }
        walkAll(row: x, into: margins)
    }

    /// The margins of `count` design rows (row-major, `width` apart, rounded in
    /// place when float32) into `margins` (row-major, `marginCount` apart).
    func evaluate(rows x: UnsafeMutablePointer<Double>, count: Int, into margins: UnsafeMutablePointer<Double>) {
        if float32 { for j in 0..<(count * width) { x[j] = Double(Float(x[j])) } }
        // Rows with a missing value take the general walk; the rest go in blocks of eight.
        var fast: [Int32] = []
        fast.reserveCapacity(count)
        for r in 0..<count {
            let row = x + r * width
            var poison = 0.0
            for j in 0..<width { poison += row[j] * 0 }  // NaN iff some value is NaN
            if needsGeneralWalk || poison.isNaN {
                walkAll(row: row, into: margins + r * marginCount)
            } else {
                fast.append(Int32(r))
            }
        }
        guard !fast.isEmpty else { return }
        nodes.withUnsafeBufferPointer { nodes in
            let nodes = nodes.baseAddress!
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 16) { scratch in
                let at = scratch.baseAddress!
                let rows = at + 8
                var start = 0
                while start < fast.count {
                    let n = min(8, fast.count - start)
                    // A short block repeats its last row; only the first n are kept.
                    for b in 0..<8 { rows[b] = fast[start + min(b, n - 1)] }
                    for b in 0..<n { begin(margins + Int(rows[b]) * marginCount) }
                    for t in roots.indices {
                        let root = roots[t]
                        for b in 0..<8 { at[b] = root }
                        for _ in 0..<depths[t] {
                            for b in 0..<8 {
                                let node = nodes[Int(at[b])]
                                let value = x[Int(rows[b]) &* width &+ Int(node.feature)]
                                at[b] = node.left &+ (value <= node.threshold ? 0 : 1)
                            }
                        }
                        let k = Int(treeMargin[t])
                        for b in 0..<n {
                            accumulate(&margins[Int(rows[b]) * marginCount + k], leafValue[Int(at[b])])
                        }
                    }
                    for b in 0..<n { end(margins + Int(rows[b]) * marginCount) }
                    start += n
                }
            }
        }
    }

    private func walkAll(row x: UnsafeMutablePointer<Double>, into margins: UnsafeMutablePointer<Double>) {
        begin(margins)
        nodes.withUnsafeBufferPointer { nodes in
            for t in roots.indices {
                let value = leafValue[Int(walk(from: roots[t], x, nodes.baseAddress!))]
                accumulate(&margins[Int(treeMargin[t])], value)
            }
        }
        end(margins)
    }

    /// Sums start at the intercept, as the libraries do (XGBoost adds each leaf
    /// to the base margin in float32); an averaging ensemble sums from 0 and
    /// adds the mean to the intercept at the end.
    @inline(__always)
    private func begin(_ margins: UnsafeMutablePointer<Double>) {
        for k in 0..<marginCount { margins[k] = average ? 0 : intercepts[k] }
    }

    @inline(__always)
    private func end(_ margins: UnsafeMutablePointer<Double>) {
        guard average else { return }
        for k in 0..<marginCount { margins[k] = intercepts[k] + margins[k] * marginScale[k] }
    }

    @inline(__always)
    private func accumulate(_ sum: inout Double, _ value: Double) {
        sum = float32 ? Double(Float(sum) + Float(value)) : sum + value
    }

    /// The general walk from `node` to a leaf: missing values, categorical sets, zero-as-missing.
    @inline(__always)
    func walk(from root: Int32, _ x: UnsafePointer<Double>, _ nodes: UnsafePointer<Node>) -> Int32 {
        var i = Int(root)
        while true {
            if flags[i] & Self.leaf != 0 { return Int32(i) }
            i = Int(nodes[i].left) + (goesLeft(i, x[Int(nodes[i].feature)], nodes[i].threshold) ? 0 : 1)
        }
    }

    /// Whether split `i` sends `value` left.
    @inline(__always)
    func goesLeft(_ i: Int, _ value: Double, _ threshold: Double) -> Bool {
        let f = flags[i]
        if value.isNaN {
            return f & Self.defaultLeft != 0
        } else if f & Self.categorical != 0 {
            return inSet(node: i, value)
        } else if f & Self.zeroIsMissing != 0 && value >= -1e-35 && value <= 1e-35 {
            return f & Self.defaultLeft != 0
        }
        return value <= threshold
    }

    /// Whether the code `value` (truncated, as both libraries do) is in node `i`'s set.
    @inline(__always)
    private func inSet(node i: Int, _ value: Double) -> Bool {
        guard value > -1, value < 65_536 else { return false }
        let code = Int(value)
        let word = code >> 6
        guard word < Int(categoryWords[i]) else { return false }
        return categoryBits[Int(categoryStart[i]) + word] & (1 << UInt64(code & 63)) != 0
    }
}
