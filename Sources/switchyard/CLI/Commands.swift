/// Every subcommand, in the order `switchyard --help` lists them.
let commands: [Command] = [
    upCommand,
    trainCommand,
    fixturesCreditCommand,
    predictCommand, explainCommand, predictionsShowCommand,
    registryCommand,
    serveCommand,
    batchCommand, batchRunCommand, batchWorkerCommand,
    streamCommand, streamProduceCommand,
    consoleCommand,
    modelsListCommand, modelsShowCommand, modelsRegisterCommand, modelsImportCommand, modelsPromoteCommand,
    modelsRollbackCommand, modelsRouteCommand, modelsBaselineCommand, modelsAuditCommand,
    keysCreateCommand, keysListCommand, keysRevokeCommand,
    imageBuildCommand, deployK8sCommand,
    benchScoreCommand, benchExplainCommand, benchTrainCommand, benchServeCommand, benchBatchCommand, benchStreamCommand, benchConsoleCommand, benchRegistryCommand,
]
